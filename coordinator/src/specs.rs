//! Compiled saga definitions by name and version. Versions are immutable, so a
//! compiled spec is cached for the life of the process. The newest version of
//! each name is remembered too: a start creates its saga only if that version is
//! still the newest (`store::create`), and learns the new one when it is not.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use deadpool_postgres::Pool;

use crate::definition::{self, Document, Invalid};
use crate::machine::spec::SagaSpec;
use crate::store::{self, definitions::StoredDefinition};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no saga definition named {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A stored definition no longer compiles (should not happen: it compiled when registered).
    #[error("stored definition {name} v{version} is invalid: {problem}")]
    Corrupt {
        name: String,
        version: i32,
        problem: Invalid,
    },
}

pub struct Specs {
    pool: Pool,
    cache: RwLock<HashMap<(String, i32), Arc<SagaSpec>>>,
    /// The newest version of each name, as last seen.
    newest: RwLock<HashMap<String, i32>>,
}

impl Specs {
    pub fn new(pool: Pool) -> Specs {
        Specs {
            pool,
            cache: RwLock::new(HashMap::new()),
            newest: RwLock::new(HashMap::new()),
        }
    }

    fn cached(&self, name: &str, version: i32) -> Option<Arc<SagaSpec>> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache.get(&(name.to_string(), version)).cloned()
    }

    fn compile(&self, stored: &StoredDefinition) -> Result<Arc<SagaSpec>, Error> {
        if let Some(spec) = self.cached(&stored.name, stored.version) {
            return Ok(spec);
        }
        let corrupt = |problem| Error::Corrupt {
            name: stored.name.clone(),
            version: stored.version,
            problem,
        };
        let doc: Document = serde_json::from_value(stored.spec.clone())
            .map_err(|e| corrupt(Invalid::new("", e.to_string())))?;
        let spec = Arc::new(definition::compile(&doc, stored.version).map_err(corrupt)?);
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        cache.insert((stored.name.clone(), stored.version), spec.clone());
        Ok(spec)
    }

    /// The newest version of `name` as last seen: the one new sagas start with.
    /// Asks Postgres only the first time; a creation under a version that is no
    /// longer the newest is refused, and the caller then asks [`Specs::newest`].
    pub async fn latest(&self, name: &str) -> Result<Arc<SagaSpec>, Error> {
        let known = self
            .newest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied();
        match known {
            Some(version) => self.get(name, version).await,
            None => self.newest(name).await,
        }
    }

    /// The newest version of `name`, as Postgres has it now.
    pub async fn newest(&self, name: &str) -> Result<Arc<SagaSpec>, Error> {
        let version = store::definitions::latest_version(&self.pool, name)
            .await?
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        self.learned(name, version);
        self.get(name, version).await
    }

    /// Records that `version` of `name` exists (it was just read or registered).
    pub fn learned(&self, name: &str, version: i32) {
        let mut newest = self.newest.write().unwrap_or_else(|p| p.into_inner());
        let known = newest.entry(name.to_string()).or_insert(version);
        *known = (*known).max(version);
    }

    /// A specific version: the one a running saga keeps.
    pub async fn get(&self, name: &str, version: i32) -> Result<Arc<SagaSpec>, Error> {
        if let Some(spec) = self.cached(name, version) {
            return Ok(spec);
        }
        let stored = store::definitions::version(&self.pool, name, version)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{name} v{version}")))?;
        self.compile(&stored)
    }
}
