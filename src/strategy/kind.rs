//! The kinds strategies read and change, with their API groups, versions and plurals.

use kube::core::ApiResource;

use crate::api::GitopsKind;

/// The kinds strategies read and change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Deployment,
    ReplicaSet,
    Service,
    HorizontalPodAutoscaler,
    HttpRoute,
    VirtualService,
    /// Argo CD's Application (GitOps owner; often in another namespace).
    ArgoApplication,
    /// Flux's Kustomization (GitOps owner).
    FluxKustomization,
    /// Flux's HelmRelease (GitOps owner).
    FluxHelmRelease,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::Service,
        Kind::HorizontalPodAutoscaler,
        Kind::HttpRoute,
        Kind::VirtualService,
        Kind::ArgoApplication,
        Kind::FluxKustomization,
        Kind::FluxHelmRelease,
    ];

    /// The kind of a GitOps owner.
    pub fn of_gitops(kind: GitopsKind) -> Kind {
        match kind {
            GitopsKind::Application => Kind::ArgoApplication,
            GitopsKind::Kustomization => Kind::FluxKustomization,
            GitopsKind::HelmRelease => Kind::FluxHelmRelease,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Service => "Service",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Kind::HttpRoute => "HTTPRoute",
            Kind::VirtualService => "VirtualService",
            Kind::ArgoApplication => "Application",
            Kind::FluxKustomization => "Kustomization",
            Kind::FluxHelmRelease => "HelmRelease",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::ReplicaSet => "apps/v1",
            Kind::Service => "v1",
            Kind::HorizontalPodAutoscaler => "autoscaling/v2",
            Kind::HttpRoute => "gateway.networking.k8s.io/v1",
            Kind::VirtualService => "networking.istio.io/v1",
            Kind::ArgoApplication => "argoproj.io/v1alpha1",
            Kind::FluxKustomization => "kustomize.toolkit.fluxcd.io/v1",
            Kind::FluxHelmRelease => "helm.toolkit.fluxcd.io/v2",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::ReplicaSet => "replicasets",
            Kind::Service => "services",
            Kind::HorizontalPodAutoscaler => "horizontalpodautoscalers",
            Kind::HttpRoute => "httproutes",
            Kind::VirtualService => "virtualservices",
            Kind::ArgoApplication => "applications",
            Kind::FluxKustomization => "kustomizations",
            Kind::FluxHelmRelease => "helmreleases",
        }
    }

    /// The kind an action names. Only the group and kind matter: an action recorded under an
    /// older version of the same group still resolves.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let group = |v: &str| v.rsplit_once('/').map_or("", |(g, _)| g).to_owned();
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == kind && group(k.api_version()) == group(api_version))
    }

    pub fn api_resource(self) -> ApiResource {
        let (group, version) = self
            .api_version()
            .rsplit_once('/')
            .unwrap_or(("", self.api_version()));
        ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: self.api_version().to_owned(),
            kind: self.as_str().to_owned(),
            plural: self.plural().to_owned(),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_action_types() {
        for kind in Kind::ALL {
            assert_eq!(
                Kind::from_type(kind.api_version(), kind.as_str()),
                Some(kind)
            );
        }
        // An action recorded under another version of the group still resolves.
        assert_eq!(
            Kind::from_type("networking.istio.io/v1beta1", "VirtualService"),
            Some(Kind::VirtualService)
        );
        assert_eq!(Kind::from_type("v1", "Deployment"), None);
        let ar = Kind::HttpRoute.api_resource();
        assert_eq!(
            (ar.group.as_str(), ar.version.as_str(), ar.plural.as_str()),
            ("gateway.networking.k8s.io", "v1", "httproutes")
        );
        assert_eq!(Kind::Service.api_resource().group, "");
    }
}
