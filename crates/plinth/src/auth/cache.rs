//! Short-lived caches of what authenticating and authorizing a request reads: verified API keys
//! and access tokens, end users' sessions with their roles, and object types with their
//! policies. Changes are honoured exactly: a change marks its cache as changing before it
//! commits and clears it after, nothing is served or stored while a change is under way, and a
//! lookup that raced with a clear is not stored. So an entry served to a writer holding the
//! database's one write turn is what the database holds: every change committed before the turn
//! was taken has either cleared the cache or is still marked as under way.
//!
//! In the embedded SQLite mode this process sees every change. With PostgreSQL several nodes may
//! change things: the credential cache serves there only while this node listens to the others'
//! changes (`realtime::notify`), each of which clears it when heard, a few milliseconds after it
//! committed; its entries are trusted for 5 seconds at most, should a node stop before telling.
//! The other caches read the database on every request there (writes need their exact schema).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::KeyCredential;

/// How long an entry is trusted at most, as a backstop.
const TTL: Duration = Duration::from_secs(60);
/// How long an entry is trusted at most where other nodes tell of their changes.
const TOLD_TTL: Duration = Duration::from_secs(5);
/// Most entries kept; past it the cache starts over.
const CAPACITY: usize = 100_000;

/// The cache of verified API keys and access tokens.
pub type CredentialCache = Cache<KeyCredential>;

#[derive(Debug)]
pub struct Cache<V> {
    /// Whether entries are served and stored.
    serving: AtomicBool,
    ttl: Duration,
    generation: AtomicU64,
    /// Changes begun and not yet ended.
    changing: AtomicU64,
    entries: RwLock<HashMap<String, (Arc<V>, Instant)>>,
}

impl<V> Cache<V> {
    pub fn new(enabled: bool) -> Self {
        Cache {
            serving: AtomicBool::new(enabled),
            ttl: TTL,
            generation: AtomicU64::new(0),
            changing: AtomicU64::new(0),
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// A cache of what other nodes may change, and tell of: it serves nothing until
    /// `set_serving(true)`, once this node listens to them.
    pub fn told_by_other_nodes() -> Self {
        Cache { ttl: TOLD_TTL, ..Cache::new(false) }
    }

    /// Starts serving (this node hears every change from now on), or stops (it may not);
    /// forgetting everything either way.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
        self.clear();
    }

    /// Whether entries are kept.
    pub fn is_enabled(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Read before loading from the database; pass to `insert`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &str) -> Option<Arc<V>> {
        if !self.is_enabled() || self.changing.load(Ordering::Acquire) > 0 {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.get(key).filter(|(_, at)| at.elapsed() < self.ttl).map(|(credential, _)| credential.clone())
    }

    /// The entry for `key`, or what `load` reads (stored, unless the cache was cleared while it
    /// read).
    pub async fn get_or_load<E, F>(&self, key: String, load: F) -> Result<Arc<V>, E>
    where
        F: std::future::Future<Output = Result<V, E>>,
    {
        if let Some(found) = self.get(&key) {
            return Ok(found);
        }
        let generation = self.generation();
        let loaded = Arc::new(load.await?);
        self.insert(key, loaded.clone(), generation);
        Ok(loaded)
    }

    /// Stores what was loaded, unless the cache was cleared since `seen_generation`.
    pub fn insert(&self, key: String, credential: Arc<V>, seen_generation: u64) {
        if !self.is_enabled() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.generation.load(Ordering::Acquire) != seen_generation || self.changing.load(Ordering::Acquire) > 0 {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, (credential, Instant::now()));
    }

    /// Marks a change as under way (before it commits): nothing is served or stored until
    /// `end_change`.
    pub fn begin_change(&self) {
        self.changing.fetch_add(1, Ordering::AcqRel);
        self.clear();
    }

    /// Ends a change begun with `begin_change`, forgetting everything (after it committed, or
    /// was abandoned).
    pub fn end_change(&self) {
        self.clear();
        self.changing.fetch_sub(1, Ordering::AcqRel);
    }

    /// Begins a change (before it commits) that ends, everything forgotten, when the guard
    /// drops: after the commit, or when the request is abandoned.
    #[must_use]
    pub fn changing(&self) -> Changing<'_, V> {
        self.begin_change();
        Changing(self)
    }

    /// Forgets everything. Call after a change to keys, tokens or tenants has committed.
    pub fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }
}

/// A change under way to what a cache holds; see `Cache::changing`.
pub struct Changing<'a, V>(&'a Cache<V>);

impl<V> Drop for Changing<'_, V> {
    fn drop(&mut self) {
        self.0.end_change();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::TenantId;

    fn credential() -> Arc<KeyCredential> {
        Arc::new(KeyCredential {
            key_id: "key_1".into(),
            tenant_id: TenantId::trusted("tn_1"),
            scopes: Arc::from(vec!["read".to_string()]),
            ip_allowlist: Vec::new(),
            expires_at: None,
            tier: Default::default(),
            rate_limit: None,
            tenant_ip_allowlist: Vec::new(),
        })
    }

    #[test]
    fn a_load_that_raced_with_a_clear_is_not_stored() {
        let cache = CredentialCache::new(true);
        let seen = cache.generation();
        cache.clear();
        cache.insert("k".into(), credential(), seen);
        assert!(cache.get("k").is_none());
        cache.insert("k".into(), credential(), cache.generation());
        assert!(cache.get("k").is_some());
        cache.clear();
        assert!(cache.get("k").is_none());
    }

    #[test]
    fn nothing_is_served_or_stored_while_a_change_is_under_way() {
        let cache = CredentialCache::new(true);
        cache.insert("k".into(), credential(), cache.generation());
        cache.begin_change();
        assert!(cache.get("k").is_none());
        cache.insert("k".into(), credential(), cache.generation());
        assert!(cache.get("k").is_none());
        cache.end_change();
        assert!(cache.get("k").is_none(), "what was loaded during the change is not kept");
        cache.insert("k".into(), credential(), cache.generation());
        assert!(cache.get("k").is_some());
    }

    #[test]
    fn a_cache_told_by_other_nodes_serves_only_while_it_listens() {
        let cache = CredentialCache::told_by_other_nodes();
        cache.insert("k".into(), credential(), cache.generation());
        assert!(cache.get("k").is_none());
        cache.set_serving(true);
        cache.insert("k".into(), credential(), cache.generation());
        assert!(cache.get("k").is_some());
        cache.set_serving(false);
        assert!(cache.get("k").is_none());
        cache.set_serving(true);
        assert!(cache.get("k").is_none(), "nothing kept across a time it did not listen");
    }

    #[test]
    fn a_disabled_cache_holds_nothing() {
        let cache = CredentialCache::new(false);
        cache.insert("k".into(), credential(), cache.generation());
        assert!(cache.get("k").is_none());
    }
}
