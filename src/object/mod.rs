//! What issuer-guard reads of a Kubernetes object: which kind it is, where its
//! pod spec lives, and issuer-guard's own marks on it.

mod marks;
mod reader;
mod text;
mod view;

pub use marks::{
    AT_RISK_LABEL, GENERATION_LABEL, ISSUER_ANNOTATION, KEY_ID_ANNOTATION, Marks, PREFIX,
    RISKS_ANNOTATION,
};
pub use reader::{ReadError, from_json};
pub use text::Text;
pub use view::*;

/// The kinds that carry a pod spec, which are the kinds the rules judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    ReplicationController,
    Job,
    CronJob,
    PodTemplate,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Pod,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::ReplicaSet,
        Kind::ReplicationController,
        Kind::Job,
        Kind::CronJob,
        Kind::PodTemplate,
    ];

    /// Recognises a kind by API group and kind name. Versions are not
    /// compared: every served version of these kinds has the same pod spec
    /// layout.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Kind> {
        let k = Kind::ALL.into_iter().find(|k| k.as_str() == kind)?;
        (k.group() == group).then_some(k)
    }

    /// Same as [`Kind::from_group_kind`] from an `apiVersion` such as `apps/v1`.
    pub fn from_api_version(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        Kind::from_group_kind(group, kind)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::ReplicationController => "ReplicationController",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::PodTemplate => "PodTemplate",
        }
    }

    pub const fn group(self) -> &'static str {
        match self {
            Kind::Pod | Kind::ReplicationController | Kind::PodTemplate => "",
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::ReplicaSet => "apps",
            Kind::Job | Kind::CronJob => "batch",
        }
    }

    /// Where the pod spec sits in objects of this kind, as a JSON path.
    pub const fn spec_path(self) -> &'static str {
        match self {
            Kind::Pod => "spec",
            Kind::CronJob => "spec.jobTemplate.spec.template.spec",
            Kind::PodTemplate => "template.spec",
            _ => "spec.template.spec",
        }
    }
}

static NO_META: MetaView<'static> = MetaView {
    name: None,
    generate_name: None,
    namespace: None,
    labels: Marks::EMPTY,
    annotations: Marks::EMPTY,
    controller: None,
};

impl<'a> ObjectView<'a> {
    /// The object's metadata, empty when it has none.
    pub fn meta(&self) -> &MetaView<'a> {
        self.metadata.as_ref().unwrap_or(&NO_META)
    }

    /// The object's namespace, or `fallback` when it names none.
    pub fn namespace_or<'s>(&'s self, fallback: &'s str) -> &'s str {
        self.meta()
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(fallback)
    }
}

impl MetaView<'_> {
    /// The name to show people: the name, or `generateName*` while the API
    /// server has not picked one yet.
    pub fn display_name(&self) -> String {
        match self.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => name.to_owned(),
            None => format!("{}*", self.generate_name.as_deref().unwrap_or_default()),
        }
    }
}

/// The pod spec of an object, with the metadata that governs it: the Pod's
/// own, or the pod template's for workloads (where the opt-out annotation is
/// read, since it travels with the pods the workload creates).
pub struct PodSpecRef<'o, 'a> {
    pub kind: Kind,
    pub spec: &'o SpecView<'a>,
    pub path: &'static str,
    pub template_meta: &'o MetaView<'a>,
}

impl<'o, 'a> PodSpecRef<'o, 'a> {
    /// `None` when the object has no pod spec (a ReplicationController
    /// without a template, say): there is nothing to judge.
    pub fn locate(kind: Kind, obj: &'o ObjectView<'a>) -> Option<Self> {
        let template = match kind {
            Kind::Pod => {
                return obj.spec.as_deref().map(|spec| PodSpecRef {
                    kind,
                    spec,
                    path: kind.spec_path(),
                    template_meta: obj.meta(),
                });
            }
            Kind::PodTemplate => obj.template.as_deref()?,
            Kind::CronJob => obj
                .spec
                .as_deref()?
                .job_template
                .as_deref()?
                .spec
                .as_deref()?
                .template
                .as_deref()?,
            _ => obj.spec.as_deref()?.template.as_deref()?,
        };
        Some(PodSpecRef {
            kind,
            spec: template.spec.as_deref()?,
            path: kind.spec_path(),
            template_meta: &template.metadata,
        })
    }

    /// All containers with the JSON field that holds them.
    pub fn containers(&self) -> impl Iterator<Item = (&'static str, usize, &'o ContainerView<'a>)> {
        let s = self.spec;
        (s.containers
            .iter()
            .enumerate()
            .map(|(i, c)| ("containers", i, c)))
        .chain(
            s.init_containers
                .iter()
                .enumerate()
                .map(|(i, c)| ("initContainers", i, c)),
        )
        .chain(
            s.ephemeral_containers
                .iter()
                .enumerate()
                .map(|(i, c)| ("ephemeralContainers", i, c)),
        )
    }

    pub fn volume(&self, name: &str) -> Option<&'o VolumeView<'a>> {
        self.spec.volumes.iter().find(|v| &*v.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_group() {
        assert_eq!(
            Kind::from_api_version("apps/v1", "Deployment"),
            Some(Kind::Deployment)
        );
        assert_eq!(Kind::from_api_version("v1", "Pod"), Some(Kind::Pod));
        assert_eq!(
            Kind::from_api_version("batch/v1", "CronJob"),
            Some(Kind::CronJob)
        );
        assert_eq!(Kind::from_api_version("v1", "Deployment"), None);
        assert_eq!(Kind::from_api_version("v1", "ConfigMap"), None);
        assert_eq!(
            Kind::from_group_kind("", "PodTemplate"),
            Some(Kind::PodTemplate)
        );
    }

    #[test]
    fn locates_spec_for_every_kind() {
        let pod = r#"{"spec":{"containers":[{"name":"a"}]}}"#;
        let wl = r#"{"spec":{"template":{"spec":{"containers":[{"name":"a"}]}}}}"#;
        let cj = r#"{"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"a"}]}}}}}}"#;
        let pt = r#"{"template":{"spec":{"containers":[{"name":"a"}]}}}"#;
        for kind in Kind::ALL {
            let text = match kind {
                Kind::Pod => pod,
                Kind::CronJob => cj,
                Kind::PodTemplate => pt,
                _ => wl,
            };
            let obj: ObjectView = serde_json::from_str(text).unwrap();
            let r = PodSpecRef::locate(kind, &obj).unwrap();
            assert_eq!(&*r.spec.containers[0].name, "a", "{kind:?}");
        }
        let empty: ObjectView = serde_json::from_str(r#"{"spec":{"template":null}}"#).unwrap();
        assert!(PodSpecRef::locate(Kind::ReplicationController, &empty).is_none());
    }

    #[test]
    fn nulls_and_unknown_fields_are_tolerated() {
        let obj: ObjectView = serde_json::from_str(
            r#"{"metadata":{"labels":null,"annotations":{"issuer-guard.io/x":"1","other":"2"},"zz":1},
                "spec":{"containers":null,"volumes":[{"name":"v","projected":{"sources":null}}],"future":{"a":[1]}}}"#,
        )
        .unwrap();
        assert!(!obj.meta().labels.present);
        assert!(obj.meta().annotations.present);
        assert_eq!(obj.meta().annotations.get("issuer-guard.io/x"), Some("1"));
        assert_eq!(obj.meta().annotations.get("other"), None);
    }

    #[test]
    fn env_keeps_what_rules_read_with_its_place() {
        let obj: ObjectView = serde_json::from_str(
            r#"{"spec":{"containers":[{"name":"a","env":[
                {"name":"PLAIN","value":"x"},
                {"name":"FIELD","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}},
                {"name":"TOKEN","valueFrom":{"secretKeyRef":{"name":"s","key":"token"}}},
                {"name":"AWS_WEB_IDENTITY_TOKEN_FILE","value":"/var/run/t"},
                {"name":"OTHER"},
                {"name":"GOOGLE_APPLICATION_CREDENTIALS"}
            ]},{"name":"b","env":null}]}}"#,
        )
        .unwrap();
        let spec = obj.spec.unwrap();
        let kept: Vec<(usize, &str)> = spec.containers[0]
            .env
            .iter()
            .map(|e| (e.index, &*e.name))
            .collect();
        assert_eq!(
            kept,
            [
                (2, "TOKEN"),
                (3, "AWS_WEB_IDENTITY_TOKEN_FILE"),
                (5, "GOOGLE_APPLICATION_CREDENTIALS")
            ]
        );
        assert!(spec.containers[1].env.is_empty());
        let err = serde_json::from_str::<ObjectView>(r#"{"spec":{"containers":[{"env":{}}]}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("expected a sequence"), "{err}");
    }

    #[test]
    fn strings_borrow_from_the_input() {
        let text = r#"{"metadata":{"name":"plain","namespace":"esc\u0061ped"}}"#;
        let obj: ObjectView = serde_json::from_str(text).unwrap();
        let meta = obj.metadata.unwrap();
        assert!(matches!(
            meta.name.unwrap().0,
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(&*meta.namespace.unwrap(), "escaped");
    }
}
