//! Bounded cache of verified tokens.
//!
//! * Keyed by a keyed 128-bit digest of the token ([`TokenDigest`]): raw tokens (bearer
//!   credentials) are never stored, and the key is the same size for every token.
//! * At most `capacity` entries; eviction is CLOCK (second chance), O(1) amortized, so memory
//!   stays flat under a flood of unique tokens. Only tokens that passed verification are
//!   inserted, so an attacker cannot fill it without valid tokens.
//! * An entry dies at its token's `exp` (checked on every hit, and expired entries are the first
//!   evicted). On a hit the caller still re-checks that the verifying key is still published
//!   and re-runs the route policy, which is not cached.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use siphasher::sip::SipHasher24;

use super::claims::TokenClaims;
use super::config::IssuerId;
use super::identity::Identity;
use super::jwks::KeyFingerprint;

/// The secret the cache's digests are keyed with: two independent SipHash-2-4 keys. The
/// glue draws it from the host's random source once per VM.
#[derive(Clone, Copy)]
pub struct CacheKey([u64; 4]);

/// A token's 128-bit digest under a [`CacheKey`]: two SipHash-2-4 outputs with independent
/// keys.
///
/// A cache hit skips signature verification, so a digest must never collide for two tokens
/// an attacker can choose. SipHash-2-4 is a pseudorandom function of its 128-bit key: without
/// the key (random per VM, never logged, never sent), an attacker cannot compute digests or
/// find a collision; a forged token matches some cached one with probability about
/// `capacity / 2^128`. SHA-256 gives the same guarantee without a key, at about ten times
/// the cost, and digesting the token is on every authenticated request: through Envoy,
/// SHA-256 of a 665-byte RS256 token measured 37k instructions, a third of the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenDigest([u64; 2]);

impl CacheKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let word = |i: usize| {
            let mut chunk = [0u8; 8];
            if let Some(source) = bytes.get(i * 8..i * 8 + 8) {
                chunk.copy_from_slice(source);
            }
            u64::from_le_bytes(chunk)
        };
        Self([word(0), word(1), word(2), word(3)])
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A key in a log line or a panic message would undo the whole point.
        f.write_str("CacheKey(..)")
    }
}

impl TokenDigest {
    pub fn of(token: &str, key: &CacheKey) -> Self {
        let [k0, k1, k2, k3] = key.0;
        let half = |k0, k1| {
            let mut hasher = SipHasher24::new_with_keys(k0, k1);
            hasher.write(token.as_bytes());
            hasher.finish()
        };
        Self([half(k0, k1), half(k2, k3)])
    }
}

impl Hash for TokenDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a keyed pseudorandom value: one word is a fine table hash (see
        // `DigestHasher`).
        state.write_u64(self.0[0]);
    }
}

/// The index's hasher: passes a [`TokenDigest`]'s first word through instead of hashing it
/// once more with the standard library's SipHash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in rather than ignore it.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// What verification established about a token; shared between the cache and the request.
#[derive(Debug, PartialEq)]
pub struct VerifiedToken {
    pub issuer: IssuerId,
    pub key: KeyFingerprint,
    pub claims: TokenClaims,
    pub identity: Identity,
}

struct Slot {
    digest: TokenDigest,
    token: Arc<VerifiedToken>,
    referenced: bool,
}

pub struct TokenCache {
    capacity: usize,
    key: CacheKey,
    index: HashMap<TokenDigest, usize, BuildHasherDefault<DigestHasher>>,
    slots: Vec<Slot>,
    hand: usize,
}

// === impl TokenCache ===

impl TokenCache {
    pub fn new(capacity: usize, key: CacheKey) -> Self {
        Self {
            capacity,
            key,
            index: HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default()),
            slots: Vec::with_capacity(capacity),
            hand: 0,
        }
    }

    /// The digest `token` is cached under.
    pub fn digest(&self, token: &str) -> TokenDigest {
        TokenDigest::of(token, &self.key)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The verified token, unless absent or expired at `now`.
    pub fn get(&mut self, digest: &TokenDigest, now: u64) -> Option<Arc<VerifiedToken>> {
        let position = *self.index.get(digest)?;
        let slot = self.slots.get_mut(position)?;
        if now >= slot.token.claims.expires_at {
            self.remove_at(position);
            return None;
        }
        slot.referenced = true;
        Some(Arc::clone(&slot.token))
    }

    pub fn insert(&mut self, digest: TokenDigest, token: Arc<VerifiedToken>, now: u64) {
        if self.capacity == 0 || now >= token.claims.expires_at {
            return;
        }
        if let Some(slot) = self.index.get(&digest).and_then(|&i| self.slots.get_mut(i)) {
            slot.token = token;
            slot.referenced = true;
            return;
        }
        if self.slots.len() >= self.capacity {
            self.evict_one(now);
        }
        self.index.insert(digest, self.slots.len());
        // New entries start unreferenced: a token seen once is the first to go.
        self.slots.push(Slot {
            digest,
            token,
            referenced: false,
        });
    }

    /// Drops every entry (e.g. after a configuration change).
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.hand = 0;
    }

    fn evict_one(&mut self, now: u64) {
        // Two sweeps at most: the first clears reference bits, the second must find a victim.
        for _ in 0..self.slots.len().saturating_mul(2).max(1) {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let Some(slot) = self.slots.get_mut(self.hand) else {
                return;
            };
            if now >= slot.token.claims.expires_at || !slot.referenced {
                self.remove_at(self.hand);
                return;
            }
            slot.referenced = false;
            self.hand += 1;
        }
    }

    fn remove_at(&mut self, position: usize) {
        if position >= self.slots.len() {
            return;
        }
        let removed = self.slots.swap_remove(position);
        self.index.remove(&removed.digest);
        if let Some(moved) = self.slots.get(position) {
            self.index.insert(moved.digest, position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HeaderValue;

    fn verified(exp: u64) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken {
            issuer: 0,
            key: crate::jwt::jwks::VerificationKey::hmac(vec![1; 32]).fingerprint(),
            claims: TokenClaims {
                issuer: "i".to_owned(),
                subject: None,
                audiences: vec![],
                scopes: vec![],
                expires_at: exp,
                not_before: None,
                issued_at: None,
                auth_time: None,
                client_id: None,
                compared: vec![],
            },
            identity: Identity {
                issuer: HeaderValue::parse("i").unwrap(),
                subject: None,
                scopes: None,
                client_id: None,
            },
        })
    }

    const KEY: [u8; 32] = [7; 32];

    fn digest(n: u32) -> TokenDigest {
        TokenDigest::of(&format!("token-{n}"), &CacheKey::from_bytes(KEY))
    }

    fn cache(capacity: usize) -> TokenCache {
        TokenCache::new(capacity, CacheKey::from_bytes(KEY))
    }

    #[test]
    fn hits_until_exp_then_misses() {
        let mut cache = cache(4);
        cache.insert(digest(1), verified(100), 10);
        assert!(cache.get(&digest(1), 99).is_some());
        assert!(cache.get(&digest(1), 100).is_none());
        assert!(cache.is_empty());
        cache.insert(digest(2), verified(100), 100);
        assert!(cache.is_empty(), "already-expired tokens are not inserted");
    }

    #[test]
    fn stays_bounded_under_a_flood_and_keeps_hot_entries() {
        let mut cache = cache(64);
        cache.insert(digest(0), verified(1_000), 0);
        for n in 1..100_000 {
            assert!(
                cache.get(&digest(0), 1).is_some(),
                "hot entry evicted at {n}"
            );
            cache.insert(digest(n), verified(1_000), 1);
            assert!(cache.len() <= 64);
        }
        assert_eq!(cache.len(), 64);
        assert_eq!(cache.index.len(), 64);
        for (position, slot) in cache.slots.iter().enumerate() {
            assert_eq!(cache.index.get(&slot.digest), Some(&position));
        }
    }

    #[test]
    fn expired_entries_are_evicted_first() {
        let mut cache = cache(2);
        cache.insert(digest(1), verified(1_000), 0);
        cache.insert(digest(2), verified(50), 0);
        assert!(cache.get(&digest(1), 10).is_some());
        assert!(cache.get(&digest(2), 10).is_some());
        cache.insert(digest(3), verified(1_000), 60);
        assert!(cache.get(&digest(1), 60).is_some());
        assert!(cache.get(&digest(3), 60).is_some());
        assert!(cache.get(&digest(2), 40).is_none());
    }

    #[test]
    fn zero_capacity_disables_caching() {
        let mut cache = cache(0);
        cache.insert(digest(1), verified(100), 0);
        assert!(cache.get(&digest(1), 1).is_none());
        assert_eq!(cache.capacity(), 0);
    }

    #[test]
    fn digest_is_not_the_token_and_depends_on_the_key() {
        let token = "eyJhbGciOiJFUzI1NiJ9.e30.c2ln";
        let key = CacheKey::from_bytes(KEY);
        let digest = TokenDigest::of(token, &key);
        assert!(!format!("{digest:?}").contains(token));
        assert_eq!(digest, TokenDigest::of(token, &key));
        assert_ne!(digest, TokenDigest::of("other", &key));
        // Another VM's key gives unrelated digests, in both halves.
        let other = [9; 32];
        let elsewhere = TokenDigest::of(token, &CacheKey::from_bytes(other));
        assert_ne!(digest.0[0], elsewhere.0[0]);
        assert_ne!(digest.0[1], elsewhere.0[1]);
        assert_eq!(format!("{key:?}"), "CacheKey(..)");
    }

    /// The two halves come from independent keys: changing the second key changes only the
    /// second half (a 128-bit digest, not one 64-bit value twice).
    #[test]
    fn the_halves_are_keyed_independently() {
        let token = "a.b.c";
        let mut bytes = KEY;
        let first = TokenDigest::of(token, &CacheKey::from_bytes(bytes));
        bytes[16] ^= 0x80;
        let second = TokenDigest::of(token, &CacheKey::from_bytes(bytes));
        assert_eq!(first.0[0], second.0[0]);
        assert_ne!(first.0[1], second.0[1]);
    }

    /// Many digests of similar tokens: no collision, and the index's first word spreads.
    #[test]
    fn digests_of_similar_tokens_do_not_collide() {
        let key = CacheKey::from_bytes(KEY);
        let mut seen = std::collections::HashSet::new();
        let mut first_words = std::collections::HashSet::new();
        for n in 0..50_000 {
            let digest = TokenDigest::of(&format!("eyJ.e30.sig{n}"), &key);
            assert!(seen.insert(digest), "collision at {n}");
            first_words.insert(digest.0[0]);
        }
        assert_eq!(first_words.len(), 50_000);
    }
}
