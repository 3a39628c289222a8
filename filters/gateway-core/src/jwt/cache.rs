//! Bounded cache of verified tokens.
//!
//! * Keyed by SHA-256 of the token: raw tokens (bearer credentials) are never stored, and the
//!   key is the same size for every token.
//! * At most `capacity` entries; eviction is CLOCK (second chance), O(1) amortized, so memory
//!   stays flat under a flood of unique tokens. Only tokens that passed verification are
//!   inserted, so an attacker cannot fill it without valid tokens.
//! * An entry dies at its token's `exp` (checked on every hit, and expired entries are the first
//!   evicted). On a hit the caller still re-checks that the verifying key is still published
//!   and re-runs the route policy, which is not cached.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::claims::TokenClaims;
use super::config::IssuerId;
use super::identity::Identity;
use super::jwks::KeyFingerprint;

/// SHA-256 of a compact token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
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
    index: HashMap<TokenDigest, usize>,
    slots: Vec<Slot>,
    hand: usize,
}

// === impl TokenCache ===

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            index: HashMap::with_capacity(capacity),
            slots: Vec::with_capacity(capacity),
            hand: 0,
        }
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

    fn digest(n: u32) -> TokenDigest {
        TokenDigest::of(&format!("token-{n}"))
    }

    #[test]
    fn hits_until_exp_then_misses() {
        let mut cache = TokenCache::new(4);
        cache.insert(digest(1), verified(100), 10);
        assert!(cache.get(&digest(1), 99).is_some());
        assert!(cache.get(&digest(1), 100).is_none());
        assert!(cache.is_empty());
        cache.insert(digest(2), verified(100), 100);
        assert!(cache.is_empty(), "already-expired tokens are not inserted");
    }

    #[test]
    fn stays_bounded_under_a_flood_and_keeps_hot_entries() {
        let mut cache = TokenCache::new(64);
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
        let mut cache = TokenCache::new(2);
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
        let mut cache = TokenCache::new(0);
        cache.insert(digest(1), verified(100), 0);
        assert!(cache.get(&digest(1), 1).is_none());
        assert_eq!(cache.capacity(), 0);
    }

    #[test]
    fn digest_is_not_the_token() {
        let token = "eyJhbGciOiJFUzI1NiJ9.e30.c2ln";
        let digest = TokenDigest::of(token);
        assert!(!format!("{digest:?}").contains(token));
        assert_eq!(digest, TokenDigest::of(token));
        assert_ne!(digest, TokenDigest::of("other"));
    }
}
