//! Who is calling, and what they may do.
//!
//! A caller presents a bearer token: one of the static API tokens of the
//! configuration, or a JWT (HS256 with a shared secret, RS256 with the
//! issuer's public key; issuer and audience checked when configured, and
//! expiry always). Each caller has a role: `viewer` reads, `operator` also
//! acts on alerts (acknowledge, resolve, assign, notes), `admin` also
//! reloads rules and zones and reads the audit log and webhook deliveries.
//! Without a token nothing but the page itself and `/healthz` answers,
//! unless the configuration names a role for anonymous callers.
//!
//! [`gate`] enforces a route group's least role and puts the [`Caller`] in
//! the request's extensions for the handlers. Every refusal (401, 403) is
//! counted by reason (`ioc_auth_refused_total{reason}`) and logged at info
//! with the caller's address and the token's name or JWT subject where
//! known; an address refused more than [`Refusals::free`] times within
//! [`Refusals::window`] waits before it is answered again (429 with
//! `Retry-After`, doubling with each further refusal), whatever token it
//! then presents, so guessing tokens is slow; other addresses are not
//! affected.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// What a caller may do; each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything operators see.
    Viewer,
    /// Also acknowledges, resolves, assigns and annotates alerts.
    Operator,
    /// Also reloads rules and zones, and reads the audit log.
    Admin,
}

impl Role {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, or the JWT's subject; recorded with every write.
    pub name: String,
    /// What the caller may do.
    pub role: Role,
}

/// A static API token of the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it, e.g. `duty-officer-1` or `grafana`: recorded with
    /// every write made with it.
    pub name: String,
    /// The secret itself (at least 16 characters).
    pub token: String,
    /// What it may do.
    pub role: Role,
}

/// JWT verification.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Shared secret of HS256 tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<String>,
    /// PEM public key (file path) of RS256 tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rs256_public_key_file: Option<std::path::PathBuf>,
    /// Required `iss`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// The claim holding the role (`viewer`, `operator`, `admin`); default `role`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_claim: Option<String>,
}

/// Access control settings (`[http.auth]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Static API tokens.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<ApiToken>,
    /// JWT verification; unset: JWTs are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// Single sign-on: JWTs of an OpenID Connect provider, verified with
    /// the keys it publishes (fetched again when it rotates them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<crate::oidc::OidcConfig>,
    /// The role of callers without a token. Unset (the default): they get
    /// 401 everywhere but the page and `/healthz`. Set it only on a closed
    /// network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<Role>,
    /// Requests per caller (token name, JWT subject, or `anonymous`).
    pub rate_limit: RateLimit,
    /// Origins (`https://host[:port]`) of other sites whose pages may call
    /// the API (CORS) and open the live feed. The page's own origin always
    /// may; none else unless listed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cors_origins: Vec<String>,
    /// How refused requests from one address slow it down.
    pub refusals: Refusals,
}

/// Refused requests (401, 403) from one address: the first `free` within
/// `window` are answered at once; after each further one the address waits
/// 1 s, 2 s, 4 s ... (at most `max_wait`) before any request of it is
/// answered (429 with `Retry-After` meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Refusals {
    /// Refusals answered at once (0: never slow an address down).
    pub free: u32,
    /// Refusals older than this are forgotten.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The longest wait.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            free: 10,
            window: Duration::from_secs(600),
            max_wait: Duration::from_secs(900),
        }
    }
}

/// One address's recent refusals.
#[derive(Clone, Copy, Debug)]
struct Strikes {
    count: u32,
    since: Instant,
    until: Option<Instant>,
}

/// Addresses tracked at most (the oldest are forgotten beyond).
const TRACKED_ADDRESSES: usize = 100_000;

/// Requests per caller: a sustained rate and a burst above it; beyond, 429
/// with `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// Sustained requests per second (0: no limit).
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 50,
            burst: 500,
        }
    }
}

type Limiter = governor::DefaultKeyedRateLimiter<String>;

/// Why a token was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No token, and anonymous callers are not allowed.
    Missing,
    /// Expired.
    Expired,
    /// Not a token this server knows, or not valid.
    Invalid(String),
}

impl AuthError {
    /// The reason, as `ioc_auth_refused_total` labels it.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Expired => "expired",
            AuthError::Invalid(_) => "invalid_token",
        }
    }

    /// The message given to the caller.
    pub fn message(&self) -> String {
        match self {
            AuthError::Missing => "a bearer token is required".into(),
            AuthError::Expired => "the token has expired".into(),
            AuthError::Invalid(why) => format!("the token is not valid: {why}"),
        }
    }
}

/// Checks tokens.
pub struct Auth {
    tokens: HashMap<String, Caller>,
    jwt: Vec<(DecodingKey, Validation)>,
    role_claim: String,
    anonymous: Option<Role>,
    limiter: Option<Limiter>,
    cors_origins: Vec<String>,
    refusals: Refusals,
    strikes: Mutex<HashMap<IpAddr, Strikes>>,
    oidc: Option<Arc<crate::oidc::Keys>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .field("jwt_keys", &self.jwt.len())
            .field("anonymous", &self.anonymous)
            .field("rate_limited", &self.limiter.is_some())
            .field("cors_origins", &self.cors_origins)
            .finish()
    }
}

impl Auth {
    /// From the configuration, plus the admin token (named `admin`).
    pub fn new(config: &AuthConfig, admin_token: &str) -> Result<Auth, String> {
        let mut tokens = HashMap::new();
        let admin = ApiToken {
            name: "admin".into(),
            token: admin_token.into(),
            role: Role::Admin,
        };
        for t in config.tokens.iter().chain([&admin]) {
            if t.token.chars().count() < 16 {
                return Err(format!(
                    "the token of {:?} is too short: at least 16 characters",
                    t.name
                ));
            }
            let caller = Caller {
                name: t.name.clone(),
                role: t.role,
            };
            if tokens.insert(t.token.clone(), caller).is_some() {
                return Err(format!("the token of {:?} is given twice", t.name));
            }
        }
        let mut jwt = Vec::new();
        let mut role_claim = "role".to_string();
        if let Some(c) = &config.jwt {
            let validation = |alg| {
                let mut v = Validation::new(alg);
                v.leeway = 30;
                v.set_required_spec_claims(&["exp", "sub"]);
                match &c.audience {
                    Some(aud) => v.set_audience(&[aud]),
                    None => v.validate_aud = false,
                }
                if let Some(iss) = &c.issuer {
                    v.set_issuer(&[iss]);
                }
                v
            };
            if let Some(secret) = &c.hs256_secret {
                if secret.len() < 32 {
                    return Err("http.auth.jwt.hs256_secret must have at least 32 bytes".into());
                }
                jwt.push((
                    DecodingKey::from_secret(secret.as_bytes()),
                    validation(Algorithm::HS256),
                ));
            }
            if let Some(path) = &c.rs256_public_key_file {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .map_err(|e| format!("{} is not an RSA public key: {e}", path.display()))?;
                jwt.push((key, validation(Algorithm::RS256)));
            }
            if jwt.is_empty() {
                return Err("http.auth.jwt needs hs256_secret or rs256_public_key_file".into());
            }
            if let Some(claim) = &c.role_claim {
                role_claim = claim.clone();
            }
        }
        for origin in &config.cors_origins {
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && axum::http::HeaderValue::from_str(origin).is_ok();
            if !ok {
                return Err(format!(
                    "cors_origins: {origin:?} is not an origin like https://grafana.example:3000"
                ));
            }
        }
        let limiter = match (
            std::num::NonZeroU32::new(config.rate_limit.per_second),
            std::num::NonZeroU32::new(config.rate_limit.burst.max(config.rate_limit.per_second)),
        ) {
            (Some(rate), Some(burst)) => Some(governor::RateLimiter::keyed(
                governor::Quota::per_second(rate).allow_burst(burst),
            )),
            _ => None,
        };
        Ok(Auth {
            tokens,
            jwt,
            role_claim,
            anonymous: config.anonymous,
            limiter,
            cors_origins: config.cors_origins.clone(),
            refusals: config.refusals,
            strikes: Mutex::default(),
            oidc: None,
        })
    }

    /// The OpenID provider's keys, when single sign-on is configured.
    pub fn oidc(&self) -> Option<&Arc<crate::oidc::Keys>> {
        self.oidc.as_ref()
    }

    /// Also accepts the JWTs of an OpenID Connect provider, verified with
    /// `keys` (see [`crate::oidc::Keys::discover`]).
    pub fn with_oidc(mut self, keys: Arc<crate::oidc::Keys>) -> Auth {
        self.oidc = Some(keys);
        self
    }

    /// [`Auth::verify`], first fetching the OpenID provider's keys again
    /// when the token names one not seen yet (a rotation).
    pub async fn verify_fresh(&self, token: Option<&str>) -> Result<Caller, AuthError> {
        if let (Some(keys), Some(token)) = (&self.oidc, token)
            && let Ok(header) = jsonwebtoken::decode_header(token)
            && let Some(kid) = header.kid
            && keys.key(&kid).is_none()
        {
            keys.fetch_for(&kid).await;
        }
        self.verify(token)
    }

    fn strikes(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Strikes>> {
        self.strikes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts and logs a refusal of a request for `path`, and slows its
    /// address down when it is one too many.
    pub fn record_refusal(
        &self,
        address: Option<IpAddr>,
        reason: &'static str,
        path: &str,
        who: Option<&str>,
    ) {
        metrics::counter!("ioc_auth_refused_total", "reason" => reason).increment(1);
        let wait = address.and_then(|a| self.refused(a));
        let address = address.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        tracing::info!(
            reason,
            %address,
            path,
            caller = who.unwrap_or("unknown"),
            wait_s = wait.map(|w| w.as_secs()),
            "request refused"
        );
    }

    /// The 429 for a request from `address` while it waits after its
    /// refusals (counted as `address_waiting`); `None` when it does not wait.
    pub fn still_waiting(&self, address: Option<IpAddr>) -> Option<Response> {
        let wait = self.waiting(address?)?;
        metrics::counter!("ioc_auth_refused_total", "reason" => "address_waiting").increment(1);
        Some(retry_after(
            ApiError::TooManyRequests(format!(
                "too many refused requests from this address; retry in {wait} s"
            )),
            wait,
        ))
    }

    /// Whole seconds `address` still waits after its refusals, if it does.
    fn waiting(&self, address: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let until = self.strikes().get(&address)?.until?;
        let left = until.checked_duration_since(now)?;
        Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    /// Counts a refusal of `address`; the wait it now has, if any.
    fn refused(&self, address: IpAddr) -> Option<Duration> {
        let policy = self.refusals;
        if policy.free == 0 {
            return None;
        }
        let now = Instant::now();
        let mut all = self.strikes();
        if all.len() >= TRACKED_ADDRESSES && !all.contains_key(&address) {
            all.retain(|_, s| now.duration_since(s.since) < policy.window);
            if all.len() >= TRACKED_ADDRESSES {
                return None;
            }
        }
        let s = all.entry(address).or_insert(Strikes {
            count: 0,
            since: now,
            until: None,
        });
        if now.duration_since(s.since) >= policy.window {
            *s = Strikes {
                count: 0,
                since: now,
                until: None,
            };
        }
        s.count += 1;
        let beyond = s.count.checked_sub(policy.free + 1)?;
        let wait = Duration::from_secs(1u64 << beyond.min(20)).min(policy.max_wait);
        s.until = Some(now + wait);
        Some(wait)
    }

    /// The other sites' origins allowed to call.
    pub fn cors_origins(&self) -> &[String] {
        &self.cors_origins
    }

    /// Whether a browser page of `origin` may open the live feed served
    /// at `host`: its own page, or a listed origin.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let own = host.is_some_and(|h| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(h)
        });
        own || self.cors_origins.iter().any(|o| o == origin)
    }

    /// Takes one request of `caller`'s allowance: the seconds to wait when
    /// none is left.
    pub fn throttle(&self, caller: &Caller) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&caller.name).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            wait.as_secs().max(1)
        })
    }

    /// The caller presenting `token` (none: anonymous).
    pub fn verify(&self, token: Option<&str>) -> Result<Caller, AuthError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return self
                .anonymous
                .map(|role| Caller {
                    name: "anonymous".into(),
                    role,
                })
                .ok_or(AuthError::Missing);
        };
        if let Some(caller) = self.static_token(token) {
            return Ok(caller);
        }
        if token.split('.').count() != 3 {
            return Err(AuthError::Invalid("unknown token".into()));
        }
        let mut last = AuthError::Invalid("unknown token".into());
        // The identity provider's token, if it names one of its keys.
        if let Some(keys) = &self.oidc
            && let Some(kid) = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid)
        {
            match keys.key(&kid) {
                Some((key, alg)) => {
                    return match jsonwebtoken::decode::<HashMap<String, serde_json::Value>>(
                        token,
                        &key,
                        &keys.validation(alg),
                    ) {
                        Ok(data) => jwt_caller(&data.claims, keys.role_claim()),
                        Err(e) if *e.kind() == ErrorKind::ExpiredSignature => {
                            Err(AuthError::Expired)
                        }
                        Err(e) => Err(AuthError::Invalid(e.to_string())),
                    };
                }
                // Perhaps signed with a key configured below instead.
                None => {
                    last = AuthError::Invalid(format!(
                        "the token is signed with key {kid:?}, which the identity provider does not publish"
                    ));
                }
            }
        }
        for (key, validation) in &self.jwt {
            match jsonwebtoken::decode::<HashMap<String, serde_json::Value>>(token, key, validation)
            {
                Ok(data) => return jwt_caller(&data.claims, &self.role_claim),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        // The other key may be the right one.
                        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidSignature => continue,
                        _ => AuthError::Invalid(e.to_string()),
                    };
                }
            }
        }
        Err(last)
    }

    /// A static token, compared in time independent of where it differs
    /// from the ones configured.
    fn static_token(&self, token: &str) -> Option<Caller> {
        let mut found = None;
        for (known, caller) in &self.tokens {
            let same = known.len() == token.len()
                && known
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            if same {
                found = Some(caller.clone());
            }
        }
        found
    }

    /// The caller of a request with these headers (`Authorization: Bearer`).
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let bearer = match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| {
                        AuthError::Invalid("expected `Authorization: Bearer <token>`".into())
                    })?,
            ),
        };
        self.verify_fresh(bearer).await
    }
}

/// The caller a JWT's verified claims name: `sub`, and the role in
/// `role_claim`.
fn jwt_caller(
    claims: &HashMap<String, serde_json::Value>,
    role_claim: &str,
) -> Result<Caller, AuthError> {
    let name = claims
        .get("sub")
        .and_then(|s| s.as_str())
        .ok_or_else(|| AuthError::Invalid("no `sub` claim".into()))?;
    let role = claims
        .get(role_claim)
        .cloned()
        .and_then(|r| serde_json::from_value::<Role>(r).ok())
        .ok_or_else(|| {
            AuthError::Invalid(format!(
                "the `{role_claim}` claim must be viewer, operator or admin"
            ))
        })?;
    Ok(Caller {
        name: name.to_string(),
        role,
    })
}

/// A route group's gate: its least role.
#[derive(Clone, Debug)]
pub struct Gate {
    /// The token checker.
    pub auth: Arc<Auth>,
    /// The least role the group needs.
    pub role: Role,
}

/// Lets the request through when its caller has the gate's role: 401
/// without a valid token, 403 with a lesser role.
pub async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(response) = gate.auth.still_waiting(address) {
        return response;
    }
    let path = request.uri().path().to_owned();
    let caller = match gate.auth.caller(request.headers()).await {
        Ok(caller) => caller,
        Err(e) => {
            let who = claimed_subject(request.headers());
            gate.auth
                .record_refusal(address, e.reason(), &path, who.as_deref());
            return ApiError::Unauthorized(e.message()).into_response();
        }
    };
    if caller.role < gate.role {
        gate.auth
            .record_refusal(address, "forbidden", &path, Some(&caller.name));
    }
    // The audit log (the outer layer) reads the caller from the response.
    let mut response = gate_inner(&gate, &caller, request, next).await;
    response.extensions_mut().insert(caller);
    response
}

/// The `sub` a JWT claims, unverified: for the log of a refusal only.
fn claimed_subject(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let sub: String = claims.get("sub")?.as_str()?.chars().take(64).collect();
    Some(format!("JWT subject {sub:?} (unverified)"))
}

fn retry_after(error: ApiError, wait: u64) -> Response {
    let mut response = error.into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&wait.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

async fn gate_inner(gate: &Gate, caller: &Caller, mut request: Request, next: Next) -> Response {
    if caller.role < gate.role {
        return ApiError::Forbidden(format!(
            "{} needs the {} role; {:?} has {}",
            request.uri().path(),
            gate.role.as_str(),
            caller.name,
            caller.role.as_str()
        ))
        .into_response();
    }
    if let Err(wait) = gate.auth.throttle(caller) {
        metrics::counter!("ioc_http_throttled_total").increment(1);
        return retry_after(
            ApiError::TooManyRequests(format!(
                "{:?} sent more requests than allowed; retry in {wait} s",
                caller.name
            )),
            wait,
        );
    }
    request.extensions_mut().insert(caller.clone());
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            tokens: vec![ApiToken {
                name: "lan".into(),
                token: "operator-token-0123456789".into(),
                role: Role::Operator,
            }],
            jwt: Some(JwtConfig {
                hs256_secret: Some("a-shared-secret-of-at-least-32-bytes!".into()),
                issuer: Some("ioc-sonla".into()),
                audience: Some("ioc".into()),
                ..JwtConfig::default()
            }),
            ..AuthConfig::default()
        }
    }

    fn jwt(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn static_tokens_jwts_and_anonymous_callers() {
        let auth = Auth::new(&config(), "admin-token-0123456789").unwrap();
        assert_eq!(
            auth.verify(Some("operator-token-0123456789")),
            Ok(Caller {
                name: "lan".into(),
                role: Role::Operator
            })
        );
        assert_eq!(
            auth.verify(Some("admin-token-0123456789")).unwrap().role,
            Role::Admin
        );
        assert_eq!(auth.verify(None), Err(AuthError::Missing));
        assert!(matches!(
            auth.verify(Some("nope")),
            Err(AuthError::Invalid(_))
        ));

        let secret = "a-shared-secret-of-at-least-32-bytes!";
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let good = serde_json::json!({"sub": "mai", "role": "viewer", "iss": "ioc-sonla", "aud": "ioc", "exp": exp});
        assert_eq!(
            auth.verify(Some(&jwt(good.clone(), secret))),
            Ok(Caller {
                name: "mai".into(),
                role: Role::Viewer
            })
        );
        let mut expired = good.clone();
        expired["exp"] = (exp - 3600).into();
        assert_eq!(
            auth.verify(Some(&jwt(expired, secret))),
            Err(AuthError::Expired)
        );
        for (field, value) in [("iss", "elsewhere"), ("aud", "other"), ("role", "mayor")] {
            let mut bad = good.clone();
            bad[field] = value.into();
            assert!(
                matches!(
                    auth.verify(Some(&jwt(bad, secret))),
                    Err(AuthError::Invalid(_))
                ),
                "{field}"
            );
        }
        assert!(matches!(
            auth.verify(Some(&jwt(good, "another-secret-of-at-least-32-bytes!!"))),
            Err(AuthError::Invalid(_))
        ));

        let open = AuthConfig {
            anonymous: Some(Role::Viewer),
            ..AuthConfig::default()
        };
        let auth = Auth::new(&open, "admin-token-0123456789").unwrap();
        assert_eq!(auth.verify(None).unwrap().role, Role::Viewer);
    }

    #[test]
    fn weak_or_repeated_tokens_are_refused() {
        assert!(Auth::new(&AuthConfig::default(), "short").is_err());
        let mut twice = config();
        twice.tokens[0].token = "admin-token-0123456789".into();
        assert!(Auth::new(&twice, "admin-token-0123456789").is_err());
    }
}
