//! `--static-endpoints host:port[=role[;kv=<value>][;sidecar]],...` for local runs
//! without a cluster: the role, the KV-compatibility value and the routing
//! sidecar that pod labels give in a cluster.

use crate::pool::endpoint::{Endpoint, Role};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StaticEndpointError {
    #[error("endpoint {0:?} is not host:port")]
    Address(String),
    #[error("endpoint {0:?}: role must be prefill, decode, both or prefill-decode")]
    Role(String),
    #[error("endpoint {0:?}: after the role only `kv=<value>` and `sidecar` may follow")]
    Trait(String),
}

/// Parses a comma separated list; empty items are skipped.
pub fn parse(list: &str) -> Result<Vec<Endpoint>, StaticEndpointError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (addr, role, traits) = match item.split_once('=') {
            Some((a, rest)) => {
                let mut parts = rest.split(';').map(str::trim);
                let role = Role::from_label(parts.next().unwrap_or(""))
                    .filter(|r| *r != Role::Unlabeled)
                    .ok_or_else(|| StaticEndpointError::Role(item.to_string()))?;
                (a.trim(), role, parts.collect::<Vec<_>>())
            }
            None => (item, Role::Unlabeled, Vec::new()),
        };
        let valid = addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return Err(StaticEndpointError::Address(item.to_string()));
        }
        let mut endpoint = Endpoint::new(addr, role);
        for t in traits {
            endpoint = match t.split_once('=') {
                Some(("kv", v)) if !v.is_empty() => endpoint.with_kv_compatibility(v),
                None if t == "sidecar" => endpoint.with_sidecar(),
                _ => return Err(StaticEndpointError::Trait(item.to_string())),
            };
        }
        out.push(endpoint);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_roles() {
        let e = parse("127.0.0.1:8000, 127.0.0.1:8001=prefill,h:9=decode,").expect("valid");
        assert_eq!(
            e,
            vec![
                Endpoint::new("127.0.0.1:8000", Role::Unlabeled),
                Endpoint::new("127.0.0.1:8001", Role::Prefill),
                Endpoint::new("h:9", Role::Decode),
            ]
        );
    }

    #[test]
    fn parses_kv_compatibility_and_sidecars() {
        let e = parse("a:1=prefill;kv=x,b:2=decode;kv=x;sidecar").expect("valid");
        assert_eq!(
            e[0],
            Endpoint::new("a:1", Role::Prefill).with_kv_compatibility("x")
        );
        assert_eq!(
            e[1],
            Endpoint::new("b:2", Role::Decode)
                .with_kv_compatibility("x")
                .with_sidecar()
        );
        for bad in ["a:1=decode;kv=", "a:1=decode;gpu", "a:1=decode;kv"] {
            assert_eq!(
                parse(bad),
                Err(StaticEndpointError::Trait(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_bad_items() {
        assert_eq!(
            parse("nohost"),
            Err(StaticEndpointError::Address("nohost".into()))
        );
        assert_eq!(
            parse("h:0"),
            Err(StaticEndpointError::Address("h:0".into()))
        );
        assert_eq!(
            parse("h:1=chef"),
            Err(StaticEndpointError::Role("h:1=chef".into()))
        );
    }
}
