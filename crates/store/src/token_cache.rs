//! Recently verified tokens, so that authenticating a request does not cost a query each time.
//!
//! Entries live [`TOKEN_CACHE_TTL`] at most, so a change made to the database by another process
//! is seen within that time; a revocation through this store empties the cache at once, and a
//! lookup that raced with it does not put its (older) answer back (a generation counter).
//! Unknown tokens are never cached, so guessing cannot fill memory; at most
//! [`TOKEN_CACHE_ENTRIES`] entries are kept.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use conductor_types::TokenInfo;

/// How long a verified token is trusted without asking the database again.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);
/// Most tokens kept.
pub const TOKEN_CACHE_ENTRIES: usize = 1024;

#[derive(Debug, Default)]
struct Entries {
    /// Bumped by every invalidation.
    generation: u64,
    /// By token hash: the token and when it was read.
    tokens: HashMap<String, (TokenInfo, Instant)>,
}

/// Token hash → token, for [`TOKEN_CACHE_TTL`].
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    entries: Mutex<Entries>,
}

impl TokenCache {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached token for `hash`, when it is fresh; otherwise the generation to pass to
    /// [`TokenCache::put`] after reading the database.
    pub(crate) fn get(&self, hash: &str, now: Instant) -> Result<TokenInfo, u64> {
        let entries = self.lock();
        match entries.tokens.get(hash) {
            Some((info, read)) if now.saturating_duration_since(*read) < TOKEN_CACHE_TTL => {
                Ok(info.clone())
            }
            _ => Err(entries.generation),
        }
    }

    /// Caches what the database said at `read`, unless the cache was invalidated since
    /// `generation` was handed out.
    pub(crate) fn put(&self, hash: &str, info: &TokenInfo, generation: u64, read: Instant) {
        let mut entries = self.lock();
        if entries.generation != generation {
            return;
        }
        if entries.tokens.len() >= TOKEN_CACHE_ENTRIES && !entries.tokens.contains_key(hash) {
            entries
                .tokens
                .retain(|_, (_, at)| read.saturating_duration_since(*at) < TOKEN_CACHE_TTL);
            if entries.tokens.len() >= TOKEN_CACHE_ENTRIES {
                entries.tokens.clear();
            }
        }
        entries.tokens.insert(hash.to_owned(), (info.clone(), read));
    }

    /// Forgets every token (a token was revoked or changed).
    pub(crate) fn invalidate(&self) {
        let mut entries = self.lock();
        entries.generation = entries.generation.wrapping_add(1);
        entries.tokens.clear();
    }
}

#[cfg(test)]
mod tests {
    use conductor_types::Timestamp;

    use super::*;

    fn token(id: &str) -> TokenInfo {
        TokenInfo {
            id: id.to_owned(),
            name: "t".to_owned(),
            admin: false,
            created_at: Timestamp(1),
            revoked_at: None,
        }
    }

    #[test]
    fn a_token_is_cached_until_it_expires() {
        let cache = TokenCache::default();
        let start = Instant::now();
        let generation = cache.get("h", start).unwrap_err();
        cache.put("h", &token("a"), generation, start);
        assert_eq!(
            cache.get("h", start + Duration::from_millis(1)),
            Ok(token("a"))
        );
        assert_eq!(
            cache.get("h", start + TOKEN_CACHE_TTL),
            Err(generation),
            "an entry as old as the TTL is asked again"
        );
    }

    #[test]
    fn invalidation_forgets_and_refuses_answers_read_before_it() {
        let cache = TokenCache::default();
        let now = Instant::now();
        let before = cache.get("h", now).unwrap_err();
        cache.put("h", &token("a"), before, now);
        // A lookup starts, then a revocation lands before it stores what it read.
        let racing = cache.get("other", now).unwrap_err();
        cache.invalidate();
        assert!(cache.get("h", now).is_err());
        cache.put("other", &token("b"), racing, now);
        assert!(cache.get("other", now).is_err());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = TokenCache::default();
        let now = Instant::now();
        for n in 0..TOKEN_CACHE_ENTRIES + 10 {
            cache.put(&format!("h{n}"), &token("a"), 0, now);
        }
        assert!(cache.lock().tokens.len() <= TOKEN_CACHE_ENTRIES);
        assert!(cache
            .get(&format!("h{}", TOKEN_CACHE_ENTRIES + 9), now)
            .is_ok());
    }
}
