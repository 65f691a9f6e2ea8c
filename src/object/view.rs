//! A read-only view of the parts of a Pod or workload the rules look at.
//!
//! Unknown fields are skipped, not kept: this view is only ever read. Patches
//! are built as paths into the raw request object, never by serializing it.
//! `null` is accepted wherever a list or map is, because clients send it.

use std::{fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer},
};

use super::{Marks, Text};

/// serde's derive also reads a struct from a JSON array, by position, so
/// `"metadata": []` would read as empty metadata and a patch would then add
/// keys under an array, which cannot apply. The objects a patch is built
/// into (the object, its metadata, a workload's spec and template) are
/// read from JSON objects only; anything else is an unreadable object.
macro_rules! from_objects_only {
    ($($view:ident),*) => {$(
        impl<'de: 'a, 'a> Deserialize<'de> for $view<'a> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_map(ObjectsOnly::<$view<'a>>(PhantomData))
            }
        }

        impl<'de: 'a, 'a> Visitor<'de> for ObjectsOnly<$view<'a>> {
            type Value = $view<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                // The inherent function serde's `remote = "Self"` derive made.
                $view::deserialize(MapAccessDeserializer::new(map))
            }
        }
    )*};
}

struct ObjectsOnly<T>(PhantomData<T>);

from_objects_only!(ObjectView, MetaView, SpecView, TemplateView);

fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    remote = "Self",
    rename_all = "camelCase",
    bound(deserialize = "'de: 'a")
)]
pub struct ObjectView<'a> {
    #[serde(default)]
    pub kind: Option<Text<'a>>,
    /// `None` when absent or null: a patch must then create it.
    #[serde(default)]
    pub metadata: Option<MetaView<'a>>,
    /// A Pod's spec, or the spec of a workload that holds a template.
    #[serde(default)]
    pub spec: Option<Box<SpecView<'a>>>,
    /// A PodTemplate keeps its template at the top level.
    #[serde(default)]
    pub template: Option<Box<TemplateView<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    remote = "Self",
    rename_all = "camelCase",
    bound(deserialize = "'de: 'a")
)]
pub struct MetaView<'a> {
    #[serde(default)]
    pub name: Option<Text<'a>>,
    #[serde(default)]
    pub generate_name: Option<Text<'a>>,
    #[serde(default)]
    pub namespace: Option<Text<'a>>,
    #[serde(default)]
    pub labels: Marks<'a>,
    #[serde(default)]
    pub annotations: Marks<'a>,
    /// The owner whose `ownerReferences` entry says `controller: true`: the
    /// controller that made this object, if any.
    #[serde(
        default,
        rename = "ownerReferences",
        deserialize_with = "controller_ref"
    )]
    pub controller: Option<OwnerView<'a>>,
}

/// A controlling owner, by kind and name (enough to name it in a message).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct OwnerView<'a> {
    #[serde(default)]
    pub kind: Text<'a>,
    #[serde(default)]
    pub name: Text<'a>,
    /// Read only to pick the controlling entry; `None` counts as false, as
    /// it does for the API server's garbage collector.
    #[serde(default)]
    controller: Option<bool>,
}

fn controller_ref<'de: 'a, 'a, D>(d: D) -> Result<Option<OwnerView<'a>>, D::Error>
where
    D: Deserializer<'de>,
{
    let refs: Vec<OwnerView<'a>> = nullable(d)?;
    Ok(refs.into_iter().find(|r| r.controller == Some(true)))
}

/// The union of a PodSpec and the specs of the workloads that wrap one
/// (`template` for most, `jobTemplate` for CronJobs). Which part applies is
/// decided by kind in [`super::PodSpecRef::locate`].
#[derive(Debug, Default, Deserialize)]
#[serde(
    remote = "Self",
    rename_all = "camelCase",
    bound(deserialize = "'de: 'a")
)]
pub struct SpecView<'a> {
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<ContainerView<'a>>,
    #[serde(default, deserialize_with = "nullable")]
    pub init_containers: Vec<ContainerView<'a>>,
    #[serde(default, deserialize_with = "nullable")]
    pub ephemeral_containers: Vec<ContainerView<'a>>,
    #[serde(default, deserialize_with = "nullable")]
    pub volumes: Vec<VolumeView<'a>>,
    #[serde(default)]
    pub template: Option<Box<TemplateView<'a>>>,
    #[serde(default)]
    pub job_template: Option<Box<TemplateView<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    remote = "Self",
    rename_all = "camelCase",
    bound(deserialize = "'de: 'a")
)]
pub struct TemplateView<'a> {
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: MetaView<'a>,
    #[serde(default)]
    pub spec: Option<Box<SpecView<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct ContainerView<'a> {
    #[serde(default)]
    pub name: Text<'a>,
    /// Read for arguments that name a token file (`--token-path`).
    #[serde(default, deserialize_with = "nullable")]
    pub command: Vec<Text<'a>>,
    #[serde(default, deserialize_with = "nullable")]
    pub args: Vec<Text<'a>>,
    /// Only the env vars a rule reads, in order, each with its index in the
    /// container's `env` (see [`EnvVarView::read_by_rules`]). The rest are
    /// read and dropped, never kept: env is often most of a pod's bytes.
    #[serde(default, deserialize_with = "env_read_by_rules")]
    pub env: Vec<EnvVarView<'a>>,
    #[serde(default, deserialize_with = "nullable")]
    pub env_from: Vec<EnvFromView<'a>>,
    #[serde(default, deserialize_with = "nullable")]
    pub volume_mounts: Vec<MountView<'a>>,
}

/// Env vars whose value names a file a cloud SDK reads a web-identity token
/// or an `external_account` credential configuration from (the
/// `sdk-consumer` rule reads them).
pub const SDK_FILE_VARS: [&str; 3] = [
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AZURE_FEDERATED_TOKEN_FILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct EnvVarView<'a> {
    /// Where the var sits in the container's `env`, for findings' paths.
    #[serde(skip)]
    pub index: usize,
    #[serde(default)]
    pub name: Text<'a>,
    /// Read for the env vars that name a token file for a cloud SDK.
    #[serde(default)]
    pub value: Option<Text<'a>>,
    #[serde(default)]
    pub value_from: Option<EnvVarSourceView<'a>>,
}

impl EnvVarView<'_> {
    /// Whether any rule reads this var: one that takes a Secret's key
    /// (`legacy-token-env`), or one named in [`SDK_FILE_VARS`].
    pub fn read_by_rules(&self) -> bool {
        self.value_from
            .as_ref()
            .is_some_and(|v| v.secret_key_ref.is_some())
            || SDK_FILE_VARS.contains(&&*self.name)
    }
}

/// A container's `env` (`null` read as empty, like every list here),
/// keeping what [`EnvVarView::read_by_rules`] accepts.
fn env_read_by_rules<'de: 'a, 'a, D>(d: D) -> Result<Vec<EnvVarView<'a>>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Kept;

    impl<'de> Visitor<'de> for Kept {
        type Value = Vec<EnvVarView<'de>>;

        // serde's own words for a list, so that a bad `env` is explained
        // as it was when it was read into a `Vec`.
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut kept = Vec::new();
            let mut index = 0;
            while let Some(mut var) = seq.next_element::<EnvVarView<'de>>()? {
                if var.read_by_rules() {
                    var.index = index;
                    kept.push(var);
                }
                index += 1;
            }
            Ok(kept)
        }
    }

    d.deserialize_option(Kept)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct EnvVarSourceView<'a> {
    #[serde(default)]
    pub secret_key_ref: Option<KeyRefView<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct KeyRefView<'a> {
    #[serde(default)]
    pub name: Option<Text<'a>>,
    #[serde(default)]
    pub key: Option<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct EnvFromView<'a> {
    #[serde(default)]
    pub secret_ref: Option<KeyRefView<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct MountView<'a> {
    #[serde(default)]
    pub name: Text<'a>,
    #[serde(default)]
    pub mount_path: Text<'a>,
    #[serde(default)]
    pub sub_path: Option<Text<'a>>,
    #[serde(default)]
    pub sub_path_expr: Option<Text<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct VolumeView<'a> {
    #[serde(default)]
    pub name: Text<'a>,
    #[serde(default)]
    pub secret: Option<SecretVolumeView<'a>>,
    #[serde(default)]
    pub projected: Option<ProjectedView<'a>>,
    /// Read for cloud credential configurations a pod mounts.
    #[serde(default)]
    pub config_map: Option<ConfigMapVolumeView<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct ConfigMapVolumeView<'a> {
    #[serde(default)]
    pub name: Option<Text<'a>>,
    #[serde(default, deserialize_with = "nullable")]
    pub items: Vec<KeyToPathView<'a>>,
}

/// A Secret a volume carries: the volume's own `secret`, or one of its
/// `projected` sources.
#[derive(Debug, Clone, Copy)]
pub struct SecretSource<'v, 'a> {
    pub name: &'v str,
    pub items: &'v [KeyToPathView<'a>],
    /// The index among `projected.sources`, `None` for a `secret` volume.
    pub projected: Option<usize>,
}

impl<'a> VolumeView<'a> {
    /// Every Secret the volume carries that names one.
    pub fn secret_sources(&self) -> impl Iterator<Item = SecretSource<'_, 'a>> {
        let own = self.secret.as_ref().and_then(|s| {
            Some(SecretSource {
                name: s.secret_name.as_deref()?,
                items: &s.items,
                projected: None,
            })
        });
        let projected = self.projected.iter().flat_map(|p| {
            p.sources.iter().enumerate().filter_map(|(i, src)| {
                let s = src.secret.as_ref()?;
                Some(SecretSource {
                    name: s.name.as_deref()?,
                    items: &s.items,
                    projected: Some(i),
                })
            })
        });
        own.into_iter().chain(projected)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct SecretVolumeView<'a> {
    #[serde(default)]
    pub secret_name: Option<Text<'a>>,
    #[serde(default, deserialize_with = "nullable")]
    pub items: Vec<KeyToPathView<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct KeyToPathView<'a> {
    #[serde(default)]
    pub key: Text<'a>,
    #[serde(default)]
    pub path: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct ProjectedView<'a> {
    #[serde(default, deserialize_with = "nullable")]
    pub sources: Vec<ProjectionView<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct ProjectionView<'a> {
    #[serde(default)]
    pub service_account_token: Option<TokenProjectionView<'a>>,
    #[serde(default)]
    pub secret: Option<SecretProjectionView<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct TokenProjectionView<'a> {
    #[serde(default)]
    pub audience: Option<Text<'a>>,
    #[serde(default)]
    pub expiration_seconds: Option<i64>,
    #[serde(default)]
    pub path: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "'de: 'a"))]
pub struct SecretProjectionView<'a> {
    #[serde(default)]
    pub name: Option<Text<'a>>,
    #[serde(default, deserialize_with = "nullable")]
    pub items: Vec<KeyToPathView<'a>>,
}

#[cfg(test)]
mod objects_only_tests {
    use super::ObjectView;

    #[test]
    fn arrays_where_a_patch_would_go_are_refused() {
        for doc in [
            r#"[]"#,
            r#"[null, [], {}, null]"#,
            r#"{"kind": "Pod", "metadata": []}"#,
            r#"{"kind": "Deployment", "spec": [null, null]}"#,
            r#"{"kind": "Deployment", "spec": {"template": []}}"#,
            r#"{"kind": "Deployment", "spec": {"template": {"metadata": ["x"]}}}"#,
        ] {
            let err = serde_json::from_str::<ObjectView>(doc).expect_err(doc);
            assert!(err.to_string().contains("a JSON object"), "{doc}: {err}");
        }
        let ok: ObjectView = serde_json::from_str(
            r#"{"kind": "Pod", "metadata": {"name": "a", "labels": {"x": "y"}}, "spec": null}"#,
        )
        .unwrap();
        assert_eq!(ok.metadata.and_then(|m| m.name).as_deref(), Some("a"));
    }
}
