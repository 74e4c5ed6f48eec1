//! Pod networking: one network namespace per pod, joined to a Linux bridge by a
//! veth pair, with a private address from the cluster's pod CIDR.
//!
//! A namespace per pod lets every process bind its real ports (two model servers
//! both listen on 8000) and gives pods addresses that EndpointSlices accept, which
//! loopback addresses are not. The plumbing is done with iproute2 (`ip`), the
//! tool an administrator would use to inspect it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::config::NetworkConfig;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("`ip {args}` failed: {message}")]
    Ip { args: String, message: String },
    #[error("pod network {0} is full")]
    Exhausted(Cidr),
    #[error("cannot persist IP allocations to {path}: {source}")]
    Persist {
        path: String,
        source: std::io::Error,
    },
}

/// An IPv4 network, e.g. `10.213.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }
    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }
    /// The `n`-th address of the network (0 is the network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base.wrapping_add(n))
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        u32::from(ip) & mask == self.base
    }
    /// Position of `ip` in the network.
    pub fn offset(&self, ip: Ipv4Addr) -> u32 {
        u32::from(ip).wrapping_sub(self.base)
    }
    /// Hex digits needed to write any host offset (4 for a /16).
    pub fn host_hex_width(&self) -> usize {
        (usize::from(32 - self.prefix)).div_ceil(4)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: bad prefix length"))?;
        let cidr = Cidr {
            base: u32::from(ip),
            prefix,
        };
        if !cidr.contains(ip) || cidr.nth(0) != ip {
            return Err(format!("{s:?} has host bits set"));
        }
        Ok(cidr)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Pod addresses by pod UID. The network address, the gateway (first host) and
/// the broadcast address are never handed out. A freed address is reused only
/// after the rest of the range, so a client still holding an old pod's address
/// does not reach a new pod by accident.
#[derive(Debug)]
pub struct IpAllocator {
    cidr: Cidr,
    by_uid: BTreeMap<String, Ipv4Addr>,
    cursor: u32,
    path: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Default)]
struct Persisted {
    cursor: u32,
    pods: BTreeMap<String, Ipv4Addr>,
}

impl IpAllocator {
    pub fn new(cidr: Cidr) -> Self {
        Self {
            cidr,
            by_uid: BTreeMap::new(),
            cursor: 2,
            path: None,
        }
    }

    /// An allocator that keeps its state in `path` (loaded now when present).
    pub fn persistent(cidr: Cidr, path: &Path) -> Self {
        let mut alloc = Self::new(cidr);
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(saved) = serde_json::from_str::<Persisted>(&text)
        {
            alloc.cursor = saved.cursor.max(2);
            alloc.by_uid = saved
                .pods
                .into_iter()
                .filter(|(_, ip)| alloc.usable(*ip))
                .collect();
        }
        alloc.path = Some(path.to_path_buf());
        alloc
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        let off = u64::from(self.cidr.offset(ip));
        self.cidr.contains(ip) && off >= 2 && off < self.cidr.size() - 1
    }

    fn taken(&self, ip: Ipv4Addr) -> bool {
        self.by_uid.values().any(|v| *v == ip)
    }

    /// The address of pod `uid`: the one it has, else `preferred` (the pod's
    /// `status.podIP`, which must not change) when usable and free, else the next
    /// free one.
    pub fn allocate(
        &mut self,
        uid: &str,
        preferred: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, NetworkError> {
        if let Some(ip) = self.by_uid.get(uid) {
            return Ok(*ip);
        }
        let ip = match preferred.filter(|ip| self.usable(*ip) && !self.taken(*ip)) {
            Some(ip) => ip,
            None => self.next_free()?,
        };
        self.by_uid.insert(uid.to_string(), ip);
        self.save()?;
        Ok(ip)
    }

    fn next_free(&mut self) -> Result<Ipv4Addr, NetworkError> {
        let hosts = u32::try_from(self.cidr.size().saturating_sub(3)).unwrap_or(u32::MAX);
        for i in 0..hosts {
            let off = 2 + (self.cursor.saturating_sub(2) + i) % hosts;
            let ip = self.cidr.nth(off);
            if !self.taken(ip) {
                self.cursor = off + 1;
                return Ok(ip);
            }
        }
        Err(NetworkError::Exhausted(self.cidr))
    }

    pub fn release(&mut self, uid: &str) -> Result<(), NetworkError> {
        if self.by_uid.remove(uid).is_some() {
            self.save()?;
        }
        Ok(())
    }

    /// Forget the pods not in `live` (found gone after a restart).
    pub fn retain(&mut self, live: &dyn Fn(&str) -> bool) -> Result<(), NetworkError> {
        let before = self.by_uid.len();
        self.by_uid.retain(|uid, _| live(uid));
        if self.by_uid.len() != before {
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> Result<(), NetworkError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let saved = Persisted {
            cursor: self.cursor,
            pods: self.by_uid.clone(),
        };
        let text = serde_json::to_string_pretty(&saved).unwrap_or_default();
        crate::files::write_atomic(path, text.as_bytes()).map_err(|source| NetworkError::Persist {
            path: path.display().to_string(),
            source,
        })
    }
}

/// The network of one pod.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub netns: String,
    pub veth: String,
    pub ip: Ipv4Addr,
}

impl Sandbox {
    /// The namespace file processes join.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

/// The bridge and the per-pod plumbing of one cluster.
#[derive(Debug)]
pub struct Network {
    pub config: NetworkConfig,
}

impl Network {
    pub fn new(config: NetworkConfig) -> Self {
        Self { config }
    }

    pub fn netns_name(&self, uid: &str) -> String {
        format!("{}-{uid}", self.config.link_prefix)
    }

    pub fn veth_name(&self, ip: Ipv4Addr) -> String {
        let width = self.config.cidr.host_hex_width();
        format!(
            "{}v{:0width$x}",
            self.config.link_prefix,
            self.config.cidr.offset(ip)
        )
    }

    /// Make sure the bridge exists, is up and carries the gateway address.
    /// Returns whether this call created it (and so should remove it at exit).
    pub async fn ensure_bridge(&self) -> Result<bool, NetworkError> {
        let bridge = &self.config.bridge;
        let gateway = format!(
            "{}/{}",
            self.config.gateway(),
            self.config.cidr.prefix_len()
        );
        let exists = ip(&["link", "show", "dev", bridge]).await.is_ok();
        if !exists {
            ip(&["link", "add", bridge, "type", "bridge"]).await?;
        }
        ip(&["addr", "replace", &gateway, "dev", bridge]).await?;
        ip(&["link", "set", bridge, "up"]).await?;
        Ok(!exists)
    }

    pub async fn remove_bridge(&self) -> Result<(), NetworkError> {
        ip_absent_ok(&["link", "del", &self.config.bridge]).await
    }

    /// Create the namespace and veth of a pod (replacing stale ones of the same
    /// name): `eth0` with the pod address, `lo` up, default route via the gateway.
    pub async fn create_sandbox(&self, uid: &str, addr: Ipv4Addr) -> Result<Sandbox, NetworkError> {
        let sandbox = Sandbox {
            netns: self.netns_name(uid),
            veth: self.veth_name(addr),
            ip: addr,
        };
        self.destroy_sandbox(&sandbox).await?;
        let ns = sandbox.netns.as_str();
        let veth = sandbox.veth.as_str();
        let cidr = format!("{addr}/{}", self.config.cidr.prefix_len());
        let gateway = self.config.gateway().to_string();
        ip(&["netns", "add", ns]).await?;
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])
        .await?;
        ip(&["link", "set", veth, "master", &self.config.bridge, "up"]).await?;
        ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"]).await?;
        ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        ip(&["-n", ns, "route", "add", "default", "via", &gateway]).await?;
        Ok(sandbox)
    }

    /// Kill whatever still runs in the pod's namespace, then remove the namespace
    /// and the veth. Missing pieces are fine.
    pub async fn destroy_sandbox(&self, sandbox: &Sandbox) -> Result<(), NetworkError> {
        self.remove_netns(&sandbox.netns).await?;
        ip_absent_ok(&["link", "del", &sandbox.veth]).await
    }

    async fn remove_netns(&self, ns: &str) -> Result<(), NetworkError> {
        if let Ok(pids) = ip(&["netns", "pids", ns]).await {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        ip_absent_ok(&["netns", "del", ns]).await
    }

    /// Remove every namespace and veth with this cluster's prefix: what a previous
    /// runner left behind. Returns how many of each were removed.
    pub async fn remove_leftovers(&self) -> Result<(usize, usize), NetworkError> {
        let ns_prefix = format!("{}-", self.config.link_prefix);
        let veth_prefix = format!("{}v", self.config.link_prefix);
        let namespaces: Vec<String> = ip(&["netns", "list"])
            .await?
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&ns_prefix))
            .map(str::to_string)
            .collect();
        for ns in &namespaces {
            self.remove_netns(ns).await?;
        }
        let links: Vec<String> = ip(&["-o", "link", "show"])
            .await?
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .filter(|n| n.starts_with(&veth_prefix))
            .collect();
        for link in &links {
            ip_absent_ok(&["link", "del", link]).await?;
        }
        Ok((namespaces.len(), links.len()))
    }
}

async fn ip(args: &[&str]) -> Result<String, NetworkError> {
    let out = Command::new("ip")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| NetworkError::Ip {
            args: args.join(" "),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetworkError::Ip {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `ip` that treats "it does not exist" as success (for removals).
async fn ip_absent_ok(args: &[&str]) -> Result<(), NetworkError> {
    match ip(args).await {
        Ok(_) => Ok(()),
        Err(NetworkError::Ip { message, .. })
            if message.contains("Cannot find device")
                || message.contains("No such file")
                || message.contains("does not exist") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("cidr")
    }

    #[test]
    fn cidr_parses_and_refuses_host_bits() {
        let c = cidr("10.213.0.0/16");
        assert_eq!(c.nth(1), Ipv4Addr::new(10, 213, 0, 1));
        assert!(c.contains(Ipv4Addr::new(10, 213, 255, 254)));
        assert!(!c.contains(Ipv4Addr::new(10, 214, 0, 1)));
        assert_eq!(c.host_hex_width(), 4);
        assert!("10.213.0.1/16".parse::<Cidr>().is_err());
        assert!("10.213.0.0".parse::<Cidr>().is_err());
        assert!("10.213.0.0/33".parse::<Cidr>().is_err());
    }

    #[test]
    fn allocation_skips_network_gateway_and_keeps_a_pods_address() {
        let mut a = IpAllocator::new(cidr("10.1.0.0/16"));
        let first = a.allocate("a", None).expect("ip");
        assert_eq!(first, Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(a.allocate("a", None).expect("same"), first);
        assert_eq!(
            a.allocate("b", None).expect("ip"),
            Ipv4Addr::new(10, 1, 0, 3)
        );
    }

    #[test]
    fn allocation_reuses_the_pods_status_ip_when_free() {
        let mut a = IpAllocator::new(cidr("10.1.0.0/16"));
        let wanted = Ipv4Addr::new(10, 1, 7, 9);
        assert_eq!(a.allocate("a", Some(wanted)).expect("ip"), wanted);
        // Taken by a, so b gets another one; outside the range is ignored.
        assert_ne!(a.allocate("b", Some(wanted)).expect("ip"), wanted);
        let outside = Ipv4Addr::new(127, 80, 0, 5);
        assert_ne!(a.allocate("c", Some(outside)).expect("ip"), outside);
        // The gateway is never handed out, even when asked for.
        let gw = Ipv4Addr::new(10, 1, 0, 1);
        assert_ne!(a.allocate("d", Some(gw)).expect("ip"), gw);
    }

    #[test]
    fn released_addresses_come_back_only_after_the_rest_of_the_range() {
        let mut a = IpAllocator::new(cidr("10.1.0.0/29")); // hosts .2 .. .6
        let ips: Vec<_> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|u| a.allocate(u, None).expect("ip"))
            .collect();
        assert_eq!(ips.last(), Some(&Ipv4Addr::new(10, 1, 0, 6)));
        assert!(matches!(
            a.allocate("f", None),
            Err(NetworkError::Exhausted(_))
        ));
        a.release("b").expect("release");
        assert_eq!(
            a.allocate("f", None).expect("reused"),
            Ipv4Addr::new(10, 1, 0, 3)
        );
    }

    #[test]
    fn allocations_survive_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ips.json");
        let c = cidr("10.1.0.0/16");
        let ip = IpAllocator::persistent(c, &path)
            .allocate("a", None)
            .expect("ip");
        let mut again = IpAllocator::persistent(c, &path);
        assert_eq!(again.allocate("a", None).expect("same"), ip);
        assert_ne!(again.allocate("b", None).expect("other"), ip);
        again.retain(&|uid| uid == "b").expect("retain");
        let mut third = IpAllocator::persistent(c, &path);
        assert_ne!(third.allocate("c", None).expect("ip"), ip, "cursor kept");
    }

    #[test]
    fn veth_names_fit_in_fifteen_bytes() {
        let net = Network::new(NetworkConfig {
            bridge: "llmd213br".into(),
            link_prefix: "llmd213".into(),
            cidr: cidr("10.213.0.0/16"),
        });
        let name = net.veth_name(Ipv4Addr::new(10, 213, 255, 254));
        assert_eq!(name, "llmd213vfffe");
        assert!(name.len() <= 15);
        assert_eq!(net.netns_name("u-1"), "llmd213-u-1");
    }
}
