//! Single sign-on with an OpenID Connect provider: its discovery document
//! names the key set, whose keys verify the provider's JWTs. The keys are
//! fetched at start, again on a schedule, and again when a token names a
//! key not seen yet (at most every [`UNKNOWN_KID_PAUSE`]), so a provider
//! that rotates its signing keys locks no one out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The least time between two fetches caused by unknown key ids (a
/// stream of forged ids cannot make ioc hammer the provider).
pub const UNKNOWN_KID_PAUSE: Duration = Duration::from_secs(10);

/// `http.auth.oidc`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (its discovery document is at
    /// `{issuer}/.well-known/openid-configuration`; tokens' `iss`).
    pub issuer: String,
    /// Required `aud` of the tokens.
    pub audience: String,
    /// The claim holding the role (`viewer`, `operator`, `admin`); default `role`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_claim: Option<String>,
    /// How often the key set is fetched again regardless.
    #[serde(default = "refresh", with = "humantime_serde")]
    pub refresh: Duration,
    /// Clock difference allowed with the provider on `exp`.
    #[serde(default = "leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// The page's client id at the provider (a public client whose
    /// redirect URI is the page's address). Unset: the page offers no
    /// sign-in with the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Scopes the page asks for.
    #[serde(default = "scope")]
    pub scope: String,
}

fn scope() -> String {
    "openid".into()
}

fn refresh() -> Duration {
    Duration::from_secs(3600)
}

fn leeway() -> Duration {
    Duration::from_secs(30)
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
}

/// What the page needs to send a person to the provider
/// (`GET /api/v1/auth/oidc`).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct PageSignIn {
    /// Where the page sends the browser (authorization code with PKCE).
    pub authorization_endpoint: String,
    /// The page's client id.
    pub client_id: String,
    /// The scopes it asks for.
    pub scope: String,
}

/// The code the provider gave the page back (`POST /api/v1/auth/oidc/token`).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeExchange {
    /// The authorization code.
    pub code: String,
    /// The PKCE verifier the page made before sending the browser away.
    pub code_verifier: String,
    /// The redirect URI the code was issued for (the page's address).
    pub redirect_uri: String,
}

/// The provider's access token for the page.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
pub struct PageToken {
    /// A bearer token ioc accepts.
    pub access_token: String,
}

/// The provider's current keys.
pub struct Keys {
    config: OidcConfig,
    jwks_uri: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, (DecodingKey, Algorithm)>>,
    /// Serializes fetches; when the last one caused by an unknown id ran.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("issuer", &self.config.issuer)
            .field("keys", &self.ids())
            .finish_non_exhaustive()
    }
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}

impl Keys {
    /// Reads the provider's discovery document and key set.
    pub async fn discover(config: &OidcConfig) -> Result<Arc<Keys>, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            config.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = get_json(&client, &url).await?;
        if discovery.issuer != config.issuer {
            return Err(format!(
                "{url} names the issuer {:?}, not {:?}",
                discovery.issuer, config.issuer
            ));
        }
        let keys = Arc::new(Keys {
            config: config.clone(),
            jwks_uri: discovery.jwks_uri,
            authorization_endpoint: discovery.authorization_endpoint,
            token_endpoint: discovery.token_endpoint,
            client,
            keys: RwLock::default(),
            fetching: tokio::sync::Mutex::new(None),
        });
        keys.fetch().await?;
        Ok(keys)
    }

    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Fetches the key set; keys it no longer lists are dropped.
    async fn fetch(&self) -> Result<(), String> {
        let set: JwkSet = get_json(&self.client, &self.jwks_uri).await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match jwk.common.key_algorithm.map(|a| a.to_string()) {
                Some(a) => match a.parse::<Algorithm>() {
                    Ok(a) => a,
                    Err(_) => continue,
                },
                None => Algorithm::RS256,
            };
            // Only public-key algorithms: an `oct` key in a public set
            // would let anyone who read it sign.
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (key, alg));
            }
        }
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
        metrics::counter!("ioc_oidc_key_fetches_total").increment(1);
        info!(issuer = %self.config.issuer, keys = ?self.ids(), "OpenID provider keys fetched");
        Ok(())
    }

    /// The key with id `kid`.
    pub fn key(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    /// Fetches the keys again because a token named `kid`, unless a fetch
    /// for that reason ran within [`UNKNOWN_KID_PAUSE`].
    pub async fn fetch_for(&self, kid: &str) {
        let mut last = self.fetching.lock().await;
        if self.key(kid).is_some() || last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_PAUSE) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch().await {
            warn!(issuer = %self.config.issuer, error = %e, "cannot fetch the OpenID provider's keys");
        }
    }

    /// The validation of this provider's tokens signed with `alg`.
    pub fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.config.leeway.as_secs();
        v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[&self.config.audience]);
        v
    }

    /// What the page needs to offer sign-in with the provider, if it may.
    pub fn page_sign_in(&self) -> Option<PageSignIn> {
        Some(PageSignIn {
            authorization_endpoint: self.authorization_endpoint.clone()?,
            client_id: self.config.client_id.clone()?,
            scope: self.config.scope.clone(),
        })
    }

    /// Trades the page's authorization code (and PKCE verifier) for an
    /// access token at the provider's token endpoint. Done here rather
    /// than in the page, whose Content-Security-Policy lets it talk to
    /// ioc only.
    pub async fn exchange(&self, code: &CodeExchange) -> Result<String, String> {
        let (Some(url), Some(client_id)) = (&self.token_endpoint, &self.config.client_id) else {
            return Err("sign-in with the provider is not configured".into());
        };
        let body = serde_urlencoded::to_string([
            ("grant_type", "authorization_code"),
            ("code", &code.code),
            ("code_verifier", &code.code_verifier),
            ("redirect_uri", &code.redirect_uri),
            ("client_id", client_id),
        ])
        .map_err(|e| e.to_string())?;
        let response = self
            .client
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("the provider refused the code: {status} {text}"));
        }
        serde_json::from_str::<PageToken>(&text)
            .map(|t| t.access_token)
            .map_err(|e| format!("{url}: {e}"))
    }

    /// The claim holding the role.
    pub fn role_claim(&self) -> &str {
        self.config.role_claim.as_deref().unwrap_or("role")
    }

    /// Fetches the keys every `refresh` until `cancel` fires.
    pub async fn refresh_every(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.config.refresh) => {}
            }
            if let Err(e) = self.fetch().await {
                warn!(issuer = %self.config.issuer, error = %e, "cannot fetch the OpenID provider's keys; the ones held stay");
            }
        }
    }
}
