//! Configuration files and the environment: typos are errors that name
//! them, the backend follows from the URL, passwords stay out of errors.

use std::time::Duration;

use eventsource::{BusConfig, Config};

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn a_misspelt_field_is_an_error_naming_it_on_every_backend() {
    for (url, typo) in [
        ("memory://", "group_capacty"),
        ("redis://127.0.0.1:6379", "namepsace"),
        ("amqp://guest:guest@127.0.0.1:5672/%2f", "prefech"),
        ("kafka://127.0.0.1:9092", "topic_prefx"),
        ("nats://127.0.0.1:4222", "ack_wiat"),
    ] {
        let toml = format!("[bus]\nurl = \"{url}\"\n{typo} = \"x\"\n");
        let err = Config::from_toml(&toml).expect_err(typo);
        assert!(err.to_string().contains(typo), "{url}: {err}");
    }
    let err = serde_json::from_str::<BusConfig>(r#"{"backend":"redis","namepsace":"shop"}"#)
        .expect_err("typo with an explicit backend");
    assert!(err.to_string().contains("namepsace"), "{err}");
    let err = Config::from_toml("[bus]\nurl = \"memory://\"\n[groupz.billing]\n")
        .expect_err("top-level typo");
    assert!(err.to_string().contains("groupz"), "{err}");
}

#[test]
fn the_backend_follows_from_the_url_and_other_fields_overlay_its_defaults() {
    let config = Config::from_toml(
        r#"
        store = "postgres://db/app"
        [bus]
        url = "kafka://broker-1:9092,broker-2:9092"
        topic_prefix = "shop"
        fetch_wait_max = "25ms"
        [groups.billing]
        concurrency = 3
        "#,
    )
    .expect("valid");
    let BusConfig::Kafka(kafka) = &config.bus else {
        panic!("not kafka: {:?}", config.bus)
    };
    assert_eq!(kafka.bootstrap_servers, "broker-1:9092,broker-2:9092");
    assert_eq!(kafka.topic_prefix, "shop");
    assert_eq!(kafka.fetch_wait_max, Duration::from_millis(25));
    assert_eq!(config.store.as_deref(), Some("postgres://db/app"));
    assert_eq!(config.group("billing").concurrency, Some(3));
    assert_eq!(config.group("other"), Default::default());

    let redis: BusConfig =
        serde_json::from_str(r#"{"url":"redis://cache:6379","namespace":"shop"}"#).expect("valid");
    let BusConfig::Redis(redis) = redis else {
        panic!("not redis")
    };
    assert_eq!(
        (redis.url.as_str(), redis.namespace.as_str()),
        ("redis://cache:6379", "shop")
    );
    for (url, backend) in [
        ("memory://", "memory"),
        ("amqp://guest:guest@127.0.0.1:5672/%2f", "rabbitmq"),
    ] {
        let config: BusConfig =
            serde_json::from_value(serde_json::json!({ "url": url })).expect("valid");
        assert_eq!(config.backend(), backend);
    }
    let err = Config::from_toml("[bus]\nnamespace = \"shop\"\n").expect_err("no url");
    assert!(err.to_string().contains("url"), "{err}");
}

#[test]
fn files_load_as_toml_or_json_and_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("es-config-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let toml = dir.join("eventsource.toml");
    std::fs::write(
        &toml,
        "[bus]\nurl = \"memory://\"\n[groups.audit]\nconcurrency = 2\n",
    )
    .expect("write");
    let json = dir.join("eventsource.json");
    std::fs::write(
        &json,
        r#"{"bus":{"url":"memory://"},"groups":{"audit":{"concurrency":2}}}"#,
    )
    .expect("write");
    assert_eq!(
        Config::load(&toml).expect("toml"),
        Config::load(&json).expect("json")
    );
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "[bus\nurl = 1").expect("write");
    let err = Config::load(&broken).expect_err("not TOML");
    assert!(err.to_string().contains("broken.toml"), "{err}");
    let err = Config::load(dir.join("missing.toml")).expect_err("no file");
    assert!(err.to_string().contains("missing.toml"), "{err}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn the_environment_sets_the_bus_its_fields_the_store_and_groups() {
    let config = Config::from_vars(vars(&[
        ("EVENTSOURCE_BUS", "redis://127.0.0.1:6379"),
        ("EVENTSOURCE_NAMESPACE", "shop"),
        ("EVENTSOURCE_BUS_PREFETCH", "64"),
        ("EVENTSOURCE_BUS_CLAIM_MIN_IDLE", "1m"),
        ("EVENTSOURCE_BUS_SINGLE_ACTIVE_CONSUMER", "true"),
        ("EVENTSOURCE_STORE", "sqlite://events.db"),
        ("EVENTSOURCE_GROUP_ORDER_EMAILS_CONCURRENCY", "4"),
        ("EVENTSOURCE_GROUP_ORDER_EMAILS_MAX_ATTEMPTS", "7"),
        ("HOME", "/root"),
    ]))
    .expect("valid");
    let BusConfig::Redis(redis) = &config.bus else {
        panic!("not redis")
    };
    assert_eq!(redis.namespace, "shop");
    assert_eq!(redis.prefetch, 64);
    assert_eq!(redis.claim_min_idle, Duration::from_secs(60));
    assert!(redis.single_active_consumer);
    assert_eq!(config.store.as_deref(), Some("sqlite://events.db"));
    let emails = config.group("order-emails");
    assert_eq!(emails.concurrency, Some(4));
    assert_eq!(emails.retry.map(|r| r.max_attempts()), Some(7));

    for (var, value) in [
        ("EVENTSOURCE_BUS_PREFECH", "64"),
        ("EVENTSOURCE_NAMESPAEC", "shop"),
        ("EVENTSOURCE_GROUP_BILLING_CONCURENCY", "4"),
    ] {
        let err = Config::from_vars(vars(&[("EVENTSOURCE_BUS", "redis://h:6379"), (var, value)]))
            .expect_err(var);
        assert!(err.to_string().contains(var), "{var}: {err}");
    }
    let err = Config::from_vars(vars(&[
        ("EVENTSOURCE_BUS", "redis://h:6379"),
        ("EVENTSOURCE_BUS_PREFETCH", "many"),
    ]))
    .expect_err("not a number");
    assert!(
        err.to_string().contains("EVENTSOURCE_BUS_PREFETCH"),
        "{err}"
    );
    let err = Config::from_vars(vars(&[("EVENTSOURCE_STORE", "sqlite://x")])).expect_err("no bus");
    assert!(err.to_string().contains("EVENTSOURCE_BUS"), "{err}");
}

#[test]
fn passwords_stay_out_of_configuration_errors() {
    for text in [
        "[bus]\nurl = \"redis://:hunter2@cache:6379\"\nnamepsace = \"x\"\n",
        "[bus]\nurl = \"mqtt://user:hunter2@broker\"\n",
        "[bus]\nurl = \"amqp://user:hunter2@broker:5672/%2f\"\nprefetch = -1\n",
    ] {
        let err = Config::from_toml(text).expect_err("invalid");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

#[test]
fn a_group_with_its_own_prefetch_gets_a_bus_config_of_its_own() {
    let config = Config::from_toml(
        "[bus]\nurl = \"redis://cache:6379\"\nprefetch = 32\n[groups.reports]\nprefetch = 256\n",
    )
    .expect("valid");
    let prefetch = |bus: BusConfig| match bus {
        BusConfig::Redis(c) => c.prefetch,
        other => panic!("not redis: {other:?}"),
    };
    assert_eq!(prefetch(config.bus_for("reports").expect("valid")), 256);
    assert_eq!(prefetch(config.bus_for("billing").expect("valid")), 32);
    let env = Config::from_vars(vars(&[
        ("EVENTSOURCE_BUS", "redis://cache:6379"),
        ("EVENTSOURCE_GROUP_REPORTS_PREFETCH", "128"),
    ]))
    .expect("valid");
    assert_eq!(prefetch(env.bus_for("reports").expect("valid")), 128);

    let rabbit = Config::from_toml(
        "[bus]\nurl = \"amqp://h:5672/%2f\"\n[groups.reports]\nprefetch = 70000\n",
    )
    .expect("parses");
    let err = rabbit.bus_for("reports").expect_err("above u16");
    assert!(err.to_string().contains("`reports`"), "{err}");
}

#[test]
fn partitions_come_from_a_file_or_the_environment_and_are_checked() {
    let config = Config::from_toml("[bus]\nurl = \"amqp://broker:5672/%2f\"\npartitions = 16\n")
        .expect("valid");
    let BusConfig::Rabbitmq(rabbit) = &config.bus else {
        panic!("not rabbitmq")
    };
    assert_eq!(rabbit.partitions, Some(16));
    let config = Config::from_vars(vars(&[
        ("EVENTSOURCE_BUS", "redis://127.0.0.1:6379"),
        ("EVENTSOURCE_BUS_PARTITIONS", "32"),
    ]))
    .expect("valid");
    let BusConfig::Redis(redis) = &config.bus else {
        panic!("not redis")
    };
    assert_eq!(redis.partitions, Some(32));
    for bad in [
        "partitions = 0",
        "partitions = 5000",
        "partitions = 8\nsingle_active_consumer = true",
    ] {
        let err =
            Config::from_toml(&format!("[bus]\nurl = \"redis://h:6379\"\n{bad}\n")).expect_err(bad);
        assert!(err.to_string().contains("partitions"), "{bad}: {err}");
    }
}
