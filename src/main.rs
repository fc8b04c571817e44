/// mimalloc rather than glibc's allocator: a request allocates a few dozen small blocks
/// (routing, headers, the database protocol), and on the benchmark's `/health` glibc's
/// malloc and free were a fifth of the service's own instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    farol::allocator::configure();
    farol::cli::run()
}
