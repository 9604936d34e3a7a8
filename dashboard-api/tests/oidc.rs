//! Single sign-on against a real OpenID Connect provider (the certified
//! `oidc-provider` package on Node.js, installed by tests/run.sh): its
//! tokens are accepted with the role their claim names; a key rotation in
//! the middle of a session is picked up without a restart; an expired
//! token, a token of another issuer and one without a role are refused.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/common/oidc.rs"]
mod oidc_provider;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use ioc_dashboard_api::AppState;
use ioc_dashboard_api::auth::{Auth, AuthConfig};
use ioc_dashboard_api::hub::LiveHub;
use ioc_dashboard_api::oidc::{Keys, OidcConfig};
use ioc_devices::Registry;
use oidc_provider::Provider;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "admin-token-0123456789";

/// An access token of `client` from the provider on `port`.
async fn token(port: u16, client: &str) -> String {
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{client}:{client}-secret-0123456789"));
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/token"))
        .header("Authorization", format!("Basic {basic}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=api")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

/// Status and body of a GET with `token`.
async fn get(addr: SocketAddr, path: &str, token: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_are_accepted_across_a_key_rotation_and_bad_ones_refused() {
    let state = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let provider = Provider::start(port, state.path(), "a", 2, None);
    let config = OidcConfig {
        issuer: format!("http://127.0.0.1:{port}"),
        audience: "ioc".into(),
        role_claim: None,
        refresh: Duration::from_secs(3600),
        leeway: Duration::ZERO,
        client_id: None,
        scope: "openid".into(),
    };
    let keys = Keys::discover(&config).await.unwrap();
    let cancel = CancellationToken::new();
    let auth = Auth::new(&AuthConfig::default(), ADMIN)
        .unwrap()
        .with_oidc(keys);
    let state_ = AppState::new(LiveHub::new(Registry::sonla_demo()), cancel.clone(), auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ioc_dashboard_api::serve(listener, None, state_));

    // The desk's token: an operator, who may read but not administer.
    let desk = token(port, "desk").await;
    assert_eq!(get(addr, "/api/v1/alerts", &desk).await.0, 200);
    assert_eq!(get(addr, "/api/v1/audit", &desk).await.0, 403);
    let chief = token(port, "chief").await;
    assert_eq!(get(addr, "/api/v1/audit", &chief).await.0, 200);
    // No role claim: refused, saying why.
    let (status, body) = get(addr, "/api/v1/alerts", &token(port, "norole").await).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("`role` claim"), "{body}");

    // The provider rotates its signing key: new tokens are signed with b,
    // a still verifies. Nothing restarts on ioc's side.
    drop(provider);
    let provider = Provider::start(port, state.path(), "b,a", 2, None);
    let rotated = token(port, "desk").await;
    assert_ne!(
        jsonwebtoken::decode_header(&rotated).unwrap().kid,
        jsonwebtoken::decode_header(&desk).unwrap().kid
    );
    assert_eq!(get(addr, "/api/v1/alerts", &rotated).await.0, 200);
    assert_eq!(get(addr, "/api/v1/alerts", &desk).await.0, 200);

    // Another provider, with the very same key: its issuer is not ours.
    let other_port = support::free_port();
    let other = Provider::start(other_port, state.path(), "b", 2, None);
    let (status, body) = get(addr, "/api/v1/alerts", &token(other_port, "desk").await).await;
    assert_eq!(status, 401, "{body}");
    drop(other);

    // Once past their `exp` the tokens have expired. JWT times are whole
    // seconds and a token is refused once `exp` < now: a token minted late
    // in a second is still good 2.1 s later, so wait for its own `exp`.
    let exp = {
        use base64::Engine as _;
        let payload = rotated.split('.').nth(1).unwrap();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&claims).unwrap()["exp"]
            .as_u64()
            .unwrap()
    };
    while jsonwebtoken::get_current_timestamp() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = get(addr, "/api/v1/alerts", &rotated).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("expired"), "{body}");
    drop(provider);
    cancel.cancel();
}
