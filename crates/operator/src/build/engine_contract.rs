//! The engine contract: every vLLM flag, value, config key and environment variable
//! the builders render, with where vLLM's own source (of the version in
//! `engine_contract.yaml`) proves it exists. `make engine-contract` checks the
//! evidence against the wheel from PyPI; the test here checks the builders render
//! nothing the contract does not list.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde::Deserialize;

    use crate::build::tests::{AGGREGATED, AUTOTUNED, PD_NIXL, sample};
    use crate::build::{BuildOptions, Children, ModelServer, Owner, build};

    #[derive(Deserialize)]
    struct Item {
        name: String,
    }

    #[derive(Deserialize)]
    struct Contract {
        version: String,
        flags: Vec<Item>,
        values: Vec<Item>,
        config_keys: Vec<Item>,
        env: Vec<Item>,
        not_vllm: Vec<String>,
    }

    fn contract() -> Contract {
        serde_yaml::from_str(include_str!("engine_contract.yaml")).expect("contract parses")
    }

    fn names(items: &[Item]) -> BTreeSet<&str> {
        items.iter().map(|i| i.name.as_str()).collect()
    }

    /// Every variant of what the operator renders: the samples without the user's
    /// own engine args and env, plus precise prefix mode, an s3:// model, a gated one
    /// data parallelism and a LoRA adapter.
    fn rendered() -> Vec<Children> {
        let mut specs = Vec::new();
        for yaml in [AGGREGATED, PD_NIXL, AUTOTUNED] {
            let mut ld = sample(yaml);
            ld.spec.engine.args.clear();
            ld.spec.engine.env.clear();
            specs.push(ld.clone());
            ld.spec.router.prefix_cache.mode = llmd_api::PrefixCacheMode::Precise;
            ld.spec.model.uri = "s3://bucket/model".into();
            ld.spec.model.token_secret = Some(llmd_api::SecretKeyRef {
                name: "hf".into(),
                key: "HF_TOKEN".into(),
            });
            ld.spec.decode.parallelism.data = 2;
            ld.spec.model.adapters = vec![llmd_api::LoraAdapterSpec {
                name: "sql".into(),
                source: "hf://org/sql-lora".into(),
            }];
            specs.push(ld.clone());
            // Replicas spanning nodes: pipeline stages over two 8-GPU nodes.
            ld.spec.decode.parallelism = llmd_api::ParallelismSpec {
                tensor: 8,
                pipeline: 2,
                data: 1,
            };
            ld.spec.decode.gpus_per_node = Some(8);
            specs.push(ld);
        }
        specs
            .iter()
            .map(|ld| {
                let owner = Owner::of(ld).expect("owner");
                build(&owner, &ld.spec, &BuildOptions::default())
            })
            .collect()
    }

    fn json_keys(value: &serde_json::Value, out: &mut BTreeSet<String>) {
        if let Some(map) = value.as_object() {
            for (k, v) in map {
                out.insert(k.clone());
                json_keys(v, out);
            }
        }
    }

    #[test]
    fn the_builders_render_only_what_vllm_of_the_contract_version_accepts() {
        let c = contract();
        let (flags, values, keys, env) = (
            names(&c.flags),
            names(&c.values),
            names(&c.config_keys),
            names(&c.env),
        );
        let mut seen_flags = BTreeSet::new();
        for children in rendered() {
            let servers: Vec<&ModelServer> =
                children.prefill.iter().chain([&children.decode]).collect();
            let pods = servers
                .iter()
                .flat_map(|s| s.pod_templates())
                .map(|t| t.spec.as_ref().expect("pod spec"));
            for pod in pods {
                let container = &pod.containers[0];
                let args = container.args.clone().unwrap_or_default();
                for (i, arg) in args.iter().enumerate() {
                    if !arg.starts_with("--") {
                        continue;
                    }
                    assert!(flags.contains(arg.as_str()), "{arg} is not in the contract");
                    seen_flags.insert(arg.clone());
                    let value = args.get(i + 1).map(String::as_str).unwrap_or("");
                    if arg == "--load-format" || arg == "--distributed-executor-backend" {
                        assert!(values.contains(value), "{arg} {value}");
                    }
                    if arg == "--kv-events-config" {
                        let config: serde_json::Value = serde_json::from_str(value).expect("JSON");
                        let mut found = BTreeSet::new();
                        json_keys(&config, &mut found);
                        for k in &found {
                            assert!(keys.contains(k.as_str()), "kv-events key {k}");
                        }
                        assert!(values.contains(config["publisher"].as_str().unwrap_or("")));
                    }
                }
                for e in container.env.iter().flatten() {
                    assert!(
                        env.contains(e.name.as_str()) || c.not_vllm.contains(&e.name),
                        "env {} is not in the contract",
                        e.name
                    );
                }
            }
            if let Some(cm) = &children.kv_transfer {
                for (name, value) in cm.data.iter().flatten() {
                    assert!(
                        env.contains(name.as_str()) || c.not_vllm.contains(name),
                        "env {name} (kv-transfer ConfigMap) is not in the contract"
                    );
                    if crate::build::kv_transfer::KV_TRANSFER_CONFIG_ENVS.contains(&name.as_str()) {
                        let config: serde_json::Value = serde_json::from_str(value).expect("JSON");
                        let mut found = BTreeSet::new();
                        json_keys(&config, &mut found);
                        for k in &found {
                            assert!(keys.contains(k.as_str()), "kv-transfer key {k}");
                        }
                        for v in ["kv_connector", "kv_role"] {
                            let v = config[v].as_str().unwrap_or("");
                            assert!(values.contains(v), "kv-transfer value {v}");
                        }
                    }
                }
            }
        }
        assert_eq!(
            seen_flags
                .iter()
                .map(String::as_str)
                .collect::<BTreeSet<_>>(),
            flags,
            "every flag in the contract is one the builders render"
        );
    }

    #[test]
    fn the_default_engine_image_is_the_contract_version() {
        assert_eq!(
            llmd_api::images::DEFAULT_ENGINE_IMAGE,
            format!("vllm/vllm-openai:v{}", contract().version)
        );
    }
}
