/// mimalloc rather than glibc's allocator: a request allocates a few dozen small blocks
/// (routing, headers, the database protocol), and on the benchmark's `/health` glibc's
/// malloc and free were a fifth of the service's own instructions. Wrapped to count what
/// each thread frees, for when an idle worker collects its heap (`allocator.rs`).
#[global_allocator]
static ALLOCATOR: farol::allocator::Allocator = farol::allocator::Allocator;

fn main() -> std::process::ExitCode {
    farol::allocator::configure();
    farol::cli::run()
}
