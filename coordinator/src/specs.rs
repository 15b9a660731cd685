//! Compiled saga definitions by name and version. Versions are immutable, so a
//! compiled spec is cached for the life of the process.

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
}

impl Specs {
    pub fn new(pool: Pool) -> Specs {
        Specs {
            pool,
            cache: RwLock::new(HashMap::new()),
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

    /// The newest version of `name`: the one new sagas start with.
    /// Asks Postgres only for its number when that version is compiled already.
    pub async fn latest(&self, name: &str) -> Result<Arc<SagaSpec>, Error> {
        let version = store::definitions::latest_version(&self.pool, name)
            .await?
            .ok_or_else(|| Error::NotFound(name.to_string()))?;
        self.get(name, version).await
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
