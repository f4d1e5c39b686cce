//! `nvca-mirror run` (the `nvca-mirror` container), the real binary against the local
//! control plane: copies the named Secrets with NVIDIA's labels, deletes orphaned copies
//! and leaves other Secrets alone, follows a changed source, and puts back a copy that
//! was deleted or edited. Source and target are two fresh test namespaces (the chart's
//! target is `nvca-system`; `--target-namespace` says which), so no cluster-wide lock.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::child::Process;
use support::testenv::{eventually, testenv};

const WAIT: Duration = Duration::from_secs(60);

fn secret(name: &str, labels: &[(&str, &str)], value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            "token".to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

fn value_of(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get("token")?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Waits until the copy `name` in `copies` holds `value`.
async fn copy_holds(copies: &Api<Secret>, name: &str, value: &str) -> Secret {
    eventually(WAIT, &format!("copy {name} holding {value}"), || async {
        let copy = copies.get_opt(name).await.ok()??;
        (value_of(&copy).as_deref() == Some(value)).then_some(copy)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_copies_named_secrets_keeps_them_in_sync_and_deletes_orphans() {
    let env = testenv().await;
    let source_ns = env.namespace("mirror-source").await;
    let target_ns = env.namespace("mirror-target").await;
    let sources: Api<Secret> = source_ns.api();
    let copies: Api<Secret> = target_ns.api();
    let post = PostParams::default();
    for (name, value) in [("regcred", "a-1"), ("other", "b-1"), ("unrelated", "c-1")] {
        sources
            .create(&post, &secret(name, &[], value))
            .await
            .expect("create a source Secret");
    }
    let copy_label = ("nvca.nvcf.nvidia.io/additional-image-pull-secret", "true");
    copies
        .create(&post, &secret("stale", &[copy_label], "old"))
        .await
        .expect("create an orphaned copy");
    copies
        .create(&post, &secret("keep", &[], "mine"))
        .await
        .expect("create an unrelated Secret in the target");

    let names = base64::engine::general_purpose::STANDARD
        .encode(r#"[{"name":"regcred"},{"name":"other"}]"#);
    let logs = tempfile::tempdir().expect("log directory");
    let kubeconfig = env.endpoints.kubeconfig.to_str().expect("UTF-8 path");
    let _mirror = Process::start(
        env!("CARGO_BIN_EXE_nvca-mirror"),
        &[
            "run",
            "--source-namespace",
            &source_ns.name,
            "--target-namespace",
            &target_ns.name,
            "--kubeconfig",
            kubeconfig,
            "--log-level",
            "info,nvca=debug",
        ],
        &[("NVCA_ADDITIONAL_IMAGE_PULL_SECRETS_JSON_BASE64", &names)],
        &logs.path().join("mirror.log"),
    );

    // Copies with NVIDIA's labels, same type and data.
    let copy = copy_holds(&copies, "regcred", "a-1").await;
    let labels = copy.labels();
    assert_eq!(
        labels["nvca.nvcf.nvidia.io/additional-image-pull-secret"],
        "true"
    );
    assert_eq!(labels["app.kubernetes.io/managed-by"], "nvca-mirror");
    assert_eq!(copy.type_.as_deref(), Some("Opaque"));
    copy_holds(&copies, "other", "b-1").await;
    eventually(WAIT, "orphaned copy stale deleted", || async {
        copies.get_opt("stale").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        copies.get_opt("keep").await.expect("read").is_some(),
        "an unlabelled Secret was deleted"
    );
    assert!(
        copies.get_opt("unrelated").await.expect("read").is_none(),
        "an unnamed Secret was copied"
    );

    // A changed source reaches its copy.
    let patch = json!({"data": {"token": base64::engine::general_purpose::STANDARD.encode("a-2")}});
    sources
        .patch("regcred", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("change the source");
    copy_holds(&copies, "regcred", "a-2").await;

    // A copy deleted, or edited, in the target is put back.
    copies
        .delete("other", &DeleteParams::default())
        .await
        .expect("delete a copy");
    copy_holds(&copies, "other", "b-1").await;
    let patch =
        json!({"data": {"token": base64::engine::general_purpose::STANDARD.encode("tampered")}});
    copies
        .patch("regcred", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("edit a copy");
    copy_holds(&copies, "regcred", "a-2").await;
}
