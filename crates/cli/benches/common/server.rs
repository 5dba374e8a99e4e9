//! A `conductor serve` process for the benches that drive a real server.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The `conductor` binary the bench runs: `CONDUCTOR_BENCH_BINARY`, else this build's.
pub fn conductor_binary() -> std::path::PathBuf {
    std::env::var_os("CONDUCTOR_BENCH_BINARY")
        .map_or_else(|| env!("CARGO_BIN_EXE_conductor").into(), Into::into)
}

/// Where a server listens, and its admin token.
pub struct Endpoint {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin token.
    pub token: String,
}

/// A `conductor serve` process on a free port and a fresh home.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub endpoint: Endpoint,
}

impl Server {
    /// `conductor serve --listen 127.0.0.1:0 FLAGS` with `CONDUCTOR_HOME=home` and `vars`.
    pub fn start(home: &Path, flags: &[&str], vars: &[(&str, &str)]) -> Result<Self, String> {
        let mut child = Command::new(conductor_binary())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(flags)
            .env("CONDUCTOR_HOME", home)
            .env("CONDUCTOR_LOG", "error")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting conductor serve: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut said = String::new();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => match line.strip_prefix("conductor serving on ") {
                    Some(rest) => break rest.split_whitespace().next().unwrap_or("").to_owned(),
                    None => {
                        said.push_str(&line);
                        said.push(' ');
                    }
                },
                _ => {
                    let _ = child.wait();
                    return Err(said.trim().to_owned());
                }
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let token = std::fs::read_to_string(home.join("admin.token"))
            .map_err(|e| format!("reading the admin token: {e}"))?
            .trim()
            .to_owned();
        Ok(Self {
            child,
            endpoint: Endpoint { url, token },
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory now.
    pub fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches(" kB").parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kib| kib / 1024.0)
    }

    /// SIGTERM, then waits for it.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    /// A bench that fails part-way leaves no server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
