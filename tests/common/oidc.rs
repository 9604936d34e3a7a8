//! A real OpenID Connect provider for the sign-on tests: the certified
//! `oidc-provider` package on Node.js (installed by tests/run.sh under
//! `$IOC_OIDC_PROVIDER_HOME`), run with `tests/oidc/provider.mjs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn provider_home() -> PathBuf {
    let home = std::env::var_os("IOC_OIDC_PROVIDER_HOME").map_or_else(
        || {
            Path::new(&std::env::var_os("HOME").expect("HOME"))
                .join(".cache/ioc-tools/oidc-provider")
        },
        PathBuf::from,
    );
    assert!(
        home.join("node_modules/oidc-provider/package.json")
            .exists(),
        "oidc-provider is not installed in {}: run tests/run.sh (npm install oidc-provider)",
        home.display()
    );
    home
}

/// The provider on `port` with keys `kids` (kept in `state`; the first
/// signs), tokens living `ttl_s`, and the page's client returning to
/// `page` if given; killed on drop.
pub struct Provider(Child);

impl Provider {
    pub fn start(port: u16, state: &Path, kids: &str, ttl_s: u32, page: Option<&str>) -> Provider {
        let home = provider_home();
        // Beside its node_modules, so that its imports resolve.
        let script = home.join("ioc-test-provider.mjs");
        std::fs::write(&script, include_str!("../oidc/provider.mjs"))
            .expect("write the provider script");
        let mut command = Command::new("node");
        command
            .arg(&script)
            .arg(port.to_string())
            .arg(state)
            .arg(kids)
            .arg(ttl_s.to_string());
        if let Some(page) = page {
            command.arg(page);
        }
        let mut provider = Provider(
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("node is needed for the OpenID provider (Debian: nodejs)"),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return provider;
            }
            if let Ok(Some(status)) = provider.0.try_wait() {
                panic!("the OpenID provider exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the OpenID provider did not start on {addr}");
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
