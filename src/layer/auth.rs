//! Caller keys → [`Principal`]: who is calling, which models they may use, and their limits.
//!
//! Keys are kept only as SHA-256 digests (from `key:`, hashed at load, or `key_sha256:`), and
//! a presented key is compared against every digest in constant time, so neither the config in
//! memory nor the time a comparison takes gives a key away. With no keys configured auth is off
//! (a loopback-only sidecar) and every request is `anonymous`.
//!
//! Sets [`Principal`] in `Meta::principal` (always) and inserts `Arc<KeyPolicy>` (for a
//! configured key) into `Meta::extensions`; consumes `Meta::caller_key` ([`CallerKey`]).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use crate::config::glob_match;
use crate::config::KeyConfig;
use crate::ir::{CallerKey, Error, ErrorKind, Principal, Reply, Request};

/// What a configured key may do.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPolicy {
    /// The key's name and team.
    pub principal: Principal,
    /// Globs over public model names; `None` for all.
    pub models: Option<Vec<String>>,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
    /// USD per UTC day.
    pub budget_usd_per_day: Option<f64>,
    /// USD per UTC month.
    pub budget_usd_per_month: Option<f64>,
}

impl KeyPolicy {
    /// Whether the key may use `model` (a public name as the caller wrote it).
    pub fn allows(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|globs| globs.iter().any(|g| glob_match(g, model)))
    }
}

/// The SHA-256 of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The configured keys, by digest.
#[derive(Debug, Default)]
pub struct Keys {
    entries: Vec<([u8; 32], Arc<KeyPolicy>)>,
}

impl Keys {
    /// Builds the table from validated config (both `key` and `key_sha256` forms).
    pub fn from_config(keys: &[KeyConfig]) -> Self {
        let entries = keys
            .iter()
            .filter_map(|k| {
                let d = match (&k.key, &k.key_sha256) {
                    (Some(secret), _) => digest(secret.expose()),
                    (None, Some(hex_digest)) => hex::decode(hex_digest).ok()?.try_into().ok()?,
                    (None, None) => return None,
                };
                let policy = KeyPolicy {
                    principal: Principal {
                        key_name: Arc::from(k.name.value.as_str()),
                        team: Arc::from(k.team.as_deref().unwrap_or("default")),
                    },
                    models: k.models.clone(),
                    rpm: k.rpm,
                    tpm: k.tpm,
                    budget_usd_per_day: k.budget_usd_per_day,
                    budget_usd_per_month: k.budget_usd_per_month,
                };
                Some((d, Arc::new(policy)))
            })
            .collect();
        Self { entries }
    }

    /// Whether auth is off.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key's policy, in config order.
    pub fn policies(&self) -> impl Iterator<Item = &Arc<KeyPolicy>> {
        self.entries.iter().map(|(_, p)| p)
    }

    /// The policy of a presented key. Every digest is compared, in constant time, whether or
    /// not an earlier one matched.
    pub fn find(&self, presented: &str) -> Option<&Arc<KeyPolicy>> {
        let d = digest(presented);
        let mut found = None;
        for (candidate, policy) in &self.entries {
            if bool::from(candidate.ct_eq(&d)) {
                found = Some(policy);
            }
        }
        found
    }
}

/// Authenticates callers against a key table.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    keys: Arc<Keys>,
}

impl AuthLayer {
    /// A layer over `keys` (empty: auth off).
    pub fn new(keys: Arc<Keys>) -> Self {
        Self { keys }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    keys: Arc<Keys>,
}

fn check(keys: &Keys, req: &Request) -> Result<Option<Arc<KeyPolicy>>, Error> {
    if keys.is_empty() {
        return Ok(None);
    }
    let Some(CallerKey(presented)) = &req.meta.caller_key else {
        return Err(Error::new(
            ErrorKind::Unauthenticated,
            "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
        ));
    };
    let Some(policy) = keys.find(presented) else {
        return Err(Error::new(
            ErrorKind::Unauthenticated,
            "Incorrect API key provided",
        ));
    };
    if let Some(model) = req.op.model() {
        if !policy.allows(model) {
            return Err(Error::new(
                ErrorKind::Forbidden,
                format!(
                    "key '{}' may not use model '{model}'",
                    policy.principal.key_name
                ),
            )
            .with_param("model"));
        }
    }
    Ok(Some(policy.clone()))
}

impl<S> Service<Request> for Auth<S>
where
    S: Service<Request, Response = Reply, Error = Error>,
{
    type Response = Reply;
    type Error = Error;
    type Future = Either<std::future::Ready<Result<Reply, Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match check(&self.keys, &req) {
            Err(e) => Either::Left(std::future::ready(Err(e))),
            Ok(None) => {
                req.meta.principal = Some(Principal::anonymous());
                Either::Right(self.inner.call(req))
            }
            Ok(Some(policy)) => {
                req.meta.principal = Some(policy.principal.clone());
                req.meta.extensions.insert(policy);
                Either::Right(self.inner.call(req))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, Strings};
    use crate::ir::{ChatRequest, Format, Meta, Operation, ReplyBody};
    use tower::ServiceExt;

    struct NoEnv;
    impl Strings for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
        fn file(&self, _: &str) -> std::io::Result<String> {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }

    fn keys() -> Keys {
        let hashed = hex::encode(digest("sk-hashed"));
        let cfg = load_str(
            &format!(
                "keys:\n  - name: a\n    key: sk-a\n    team: search\n    models: [\"chat-*\"]\n  - name: b\n    key_sha256: {hashed}\n"
            ),
            &NoEnv,
        )
        .unwrap();
        Keys::from_config(&cfg.keys)
    }

    #[test]
    fn sha256_of_a_known_string() {
        assert_eq!(
            hex::encode(digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keys_match_by_digest_in_either_form() {
        let k = keys();
        assert_eq!(&*k.find("sk-a").unwrap().principal.team, "search");
        assert_eq!(&*k.find("sk-hashed").unwrap().principal.key_name, "b");
        assert_eq!(&*k.find("sk-hashed").unwrap().principal.team, "default");
        assert!(k.find("sk-b").is_none());
        assert!(k.find("").is_none());
        assert!(k.find("sk-a ").is_none());
    }

    #[test]
    fn model_globs() {
        let k = keys();
        let a = k.find("sk-a").unwrap();
        assert!(a.allows("chat-fast") && !a.allows("gpt-4o"));
        assert!(k.find("sk-hashed").unwrap().allows("anything"));
        assert!(glob_match("*-mini", "gpt-4o-mini") && glob_match("a*b*c", "axbxc"));
        assert!(!glob_match("a*b*c", "axbx"));
    }

    fn request(model: &str, key: Option<&str>) -> Request {
        let mut meta = Meta::new(Arc::from("r"), Format::OpenAi);
        if let Some(k) = key {
            meta.caller_key = Some(CallerKey(Arc::from(k)));
        }
        Request {
            op: Operation::Chat(Box::new(ChatRequest::new(model, Format::OpenAi))),
            meta,
        }
    }

    async fn run(keys: Keys, req: Request) -> Result<Principal, Error> {
        let svc =
            AuthLayer::new(Arc::new(keys)).layer(tower::service_fn(|r: Request| async move {
                let p = r.meta.principal.clone().unwrap();
                let mut reply = Reply::local(ReplyBody::TokenCount(0));
                reply.extensions.insert(p);
                Ok::<_, Error>(reply)
            }));
        let reply = svc.oneshot(req).await?;
        Ok(reply.extensions.get::<Principal>().cloned().unwrap())
    }

    #[tokio::test]
    async fn statuses() {
        let p = run(Keys::default(), request("x", None)).await.unwrap();
        assert_eq!(p, Principal::anonymous());
        let e = run(keys(), request("chat-a", None)).await.unwrap_err();
        assert_eq!(e.status, 401);
        let e = run(keys(), request("chat-a", Some("nope")))
            .await
            .unwrap_err();
        assert_eq!(e.status, 401);
        let e = run(keys(), request("gpt-4o", Some("sk-a")))
            .await
            .unwrap_err();
        assert_eq!((e.status, e.kind), (403, ErrorKind::Forbidden));
        let p = run(keys(), request("chat-a", Some("sk-a"))).await.unwrap();
        assert_eq!(&*p.key_name, "a");
    }
}
