//! A PostgreSQL cluster with TLS on, and the certificates to reach it right and wrong.

use std::path::Path;
use std::process::Command;

use super::pg::PgCluster;

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A self-signed CA: `{name}.crt` and `{name}.key`.
fn make_ca(dir: &Path, name: &str) {
    let (key, crt, subject) = (
        format!("{name}.key"),
        format!("{name}.crt"),
        format!("/CN={name}"),
    );
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &EC_KEY,
            &[
                "-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subject,
            ],
        ]
        .concat(),
    );
}

/// `server.crt` and `server.key` for `localhost` (and no IP address), signed by `ca`.
fn make_server_certificate(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            &["req"][..],
            &EC_KEY,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

pub struct TlsCluster {
    pub cluster: PgCluster,
    pub dir: tempfile::TempDir,
}

impl TlsCluster {
    /// A cluster with TLS on, its certificate for `localhost` signed by `ca.crt`; `other-ca.crt`
    /// is a CA that did not sign it.
    pub fn start() -> TlsCluster {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        make_ca(dir.path(), "ca");
        make_ca(dir.path(), "other-ca"); // a CA that did not sign the server's certificate
        make_server_certificate(dir.path(), "ca");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for file in ["server.crt", "server.key", "ca.crt", "other-ca.crt"] {
            let path = dir.path().join(file);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        // PostgreSQL insists that its key belongs to it and nobody else can read it.
        let key = dir.path().join("server.key");
        let status = Command::new("chown").arg("postgres").arg(&key).status();
        if status.is_err() || !status.unwrap().success() {
            eprintln!("not root: the key stays ours");
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cert = format!("ssl_cert_file={}", dir.path().join("server.crt").display());
        let key = format!("ssl_key_file={}", key.display());
        let cluster = PgCluster::start_with(&["ssl=on", &cert, &key]);
        TlsCluster { cluster, dir }
    }

    pub fn url(&self, host: &str, mode: &str, ca: Option<&str>) -> String {
        let mut url = format!(
            "postgres://postgres@{host}:{}/postgres?sslmode={mode}",
            self.cluster.port
        );
        if let Some(ca) = ca {
            url.push_str(&format!(
                "&sslrootcert={}",
                self.dir.path().join(ca).display()
            ));
        }
        url
    }

    pub async fn encrypted_connections(&self) -> i64 {
        let (client, connection) =
            tokio_postgres::connect(&self.cluster.url("postgres"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE application_name = 'farol' AND ssl",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }
}
