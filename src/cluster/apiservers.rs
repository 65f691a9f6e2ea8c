//! Which API servers to ask, each on its own connection. A pooled client
//! lands on whichever server its connection reached, which in an HA control
//! plane rolled one server at a time says nothing of the others; discovery
//! asks each of them.

use std::sync::Mutex;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client, api::ListParams};

use super::ClusterError;

/// The name on the API servers' serving certificates that the in-cluster
/// CA vouches for, used when a server is reached by its address.
const SERVICE_NAME: &str = "kubernetes.default.svc";

/// Where the list of API servers comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Addresses {
    /// `--apiserver-endpoints`: these URLs, as given.
    Pinned(Vec<String>),
    /// The `default/kubernetes` EndpointSlices, read at every round.
    EndpointSlices,
}

/// The servers of one round.
pub(crate) enum Targets {
    /// Every API server, by address, each with its own client.
    Each(Vec<(String, Client)>),
    /// One address in front of all of them (a load balancer, or no list
    /// could be read): a fresh connection, so that rounds are spread over
    /// the servers behind it. Which server answered is unknown.
    One(Client),
}

pub(crate) struct ApiServers {
    base: kube::Config,
    addresses: Addresses,
    /// Clients kept between rounds, by URL, so that a connection is reused
    /// by the same server's next probe and never by another's.
    clients: Mutex<Vec<(String, Client)>>,
    /// Said once: the EndpointSlices could not be used.
    warned: Mutex<Option<String>>,
}

impl ApiServers {
    pub(crate) fn new(base: kube::Config, addresses: Addresses) -> Self {
        Self {
            base,
            addresses,
            clients: Mutex::new(Vec::new()),
            warned: Mutex::new(None),
        }
    }

    /// The servers to probe now. `client` reads the EndpointSlices.
    pub(crate) async fn targets(&self, client: &Client) -> Result<Targets, ClusterError> {
        let (urls, server_name) = match &self.addresses {
            Addresses::Pinned(urls) => (urls.clone(), None),
            Addresses::EndpointSlices => match self.read_slices(client).await {
                Ok(urls) if !urls.is_empty() => (urls, Some(SERVICE_NAME)),
                Ok(_) => {
                    self.warn_once("the default/kubernetes EndpointSlices list no ready address");
                    return self.one();
                }
                Err(e) => {
                    self.warn_once(&format!(
                        "cannot list the default/kubernetes EndpointSlices: {e}"
                    ));
                    return self.one();
                }
            },
        };
        let mut kept = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|(url, _)| urls.contains(url));
        let mut each = Vec::with_capacity(urls.len());
        for url in urls {
            let client = match kept.iter().find(|(u, _)| *u == url) {
                Some((_, c)) => c.clone(),
                None => {
                    let c = self.client_at(&url, server_name)?;
                    kept.push((url.clone(), c.clone()));
                    c
                }
            };
            each.push((url, client));
        }
        Ok(Targets::Each(each))
    }

    fn one(&self) -> Result<Targets, ClusterError> {
        Ok(Targets::One(Client::try_from(self.base.clone())?))
    }

    fn client_at(&self, url: &str, server_name: Option<&str>) -> Result<Client, ClusterError> {
        let mut config = self.base.clone();
        config.cluster_url = url
            .parse()
            .map_err(|e| ClusterError::Endpoint(format!("{url}: {e}")))?;
        if let Some(name) = server_name {
            config.tls_server_name = Some(name.to_owned());
        }
        Ok(Client::try_from(config)?)
    }

    async fn read_slices(&self, client: &Client) -> Result<Vec<String>, kube::Error> {
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let params = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
        let slices = api.list(&params).await?;
        Ok(addresses(&slices.items))
    }

    fn warn_once(&self, why: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.as_deref() != Some(why) {
            tracing::warn!(
                reason = why,
                "probing the API servers through one address: which server answers is unknown, so a switch completes only after the old pair has been unseen for a discovery window"
            );
            *warned = Some(why.to_owned());
        }
    }
}

/// The HTTPS URLs of the ready endpoints of `slices`: each address with the
/// slice's `https` port (or its only port).
pub(crate) fn addresses(slices: &[EndpointSlice]) -> Vec<String> {
    let mut urls = Vec::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("https"))
            .or_else(|| (ports.len() == 1).then(|| &ports[0]))
            .and_then(|p| p.port);
        let Some(port) = port else { continue };
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address.clone()
                };
                let url = format!("https://{host}:{port}");
                if !urls.contains(&url) {
                    urls.push(url);
                }
            }
        }
    }
    urls.sort();
    urls
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn endpoint(addresses: &[&str], ready: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            conditions: Some(EndpointConditions {
                ready,
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        }
    }

    fn slice(ports: &[(Option<&str>, i32)], endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".to_owned(),
            endpoints: Some(endpoints),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| EndpointPort {
                        name: name.map(str::to_owned),
                        port: Some(*port),
                        ..EndpointPort::default()
                    })
                    .collect(),
            ),
            ..EndpointSlice::default()
        }
    }

    #[test]
    fn every_ready_address_with_the_https_port() {
        let slices = [
            slice(
                &[(Some("https"), 6443)],
                vec![
                    endpoint(&["10.0.0.2"], Some(true)),
                    endpoint(&["10.0.0.1"], None),
                    endpoint(&["10.0.0.3"], Some(false)),
                ],
            ),
            slice(&[(None, 443)], vec![endpoint(&["fd00::1"], Some(true))]),
        ];
        assert_eq!(
            addresses(&slices),
            [
                "https://10.0.0.1:6443",
                "https://10.0.0.2:6443",
                "https://[fd00::1]:443",
            ]
        );
    }

    #[test]
    fn a_slice_without_a_usable_port_gives_nothing() {
        let two_unnamed = slice(&[(None, 1), (None, 2)], vec![endpoint(&["10.0.0.1"], None)]);
        let none = slice(&[], vec![endpoint(&["10.0.0.1"], None)]);
        assert!(addresses(&[two_unnamed, none]).is_empty());
        // The same address in two slices is probed once.
        let a = slice(
            &[(Some("https"), 6443)],
            vec![endpoint(&["10.0.0.1"], None)],
        );
        assert_eq!(addresses(&[a.clone(), a]).len(), 1);
    }
}
