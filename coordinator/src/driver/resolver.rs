//! Name resolution for participant calls that drops link-local and cloud metadata
//! addresses, so a host name on the allow-list cannot be re-pointed at them (DNS rebinding).

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::allow::never_allowed;

/// The system resolver, minus the addresses the coordinator never calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let callable: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| never_allowed(a.ip()).is_none())
                .collect();
            if callable.is_empty() {
                return Err(format!(
                    "{host} resolves only to link-local or metadata addresses, which are never called"
                )
                .into());
            }
            Ok(Box::new(callable.into_iter()) as Addrs)
        })
    }
}
