//! Proves that docker-compose.yml and the Dockerfile fit the binaries they run.
//!
//! The expected services are there and Kafka is the apache/kafka image; every `--flag` in a
//! rebound service's `command:` and every `REBOUND_*` variable in its `environment:` is one the
//! binary accepts, with a value it accepts (read from the binaries' clap definitions, no process
//! is started); and the Dockerfile builds every binary the compose file runs.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use serde_yaml_ng::{Mapping, Value};

/// The binaries of the rebound image.
const IMAGE_BINARIES: [&str; 4] = ["rebound", "rebound-consumer", "rebound-scheduler", "rebound-producer"];

/// The clap definition of every binary of the image, built so that global flags (such as
/// `--log-format`) are also listed on the subcommands.
fn binary_commands() -> Vec<clap::Command> {
    let mut commands = vec![
        rebound_cli::Cli::command(),
        rebound_consumer::ConsumerArgs::command(),
        rebound_scheduler::SchedulerArgs::command(),
        rebound_producer::ProducerArgs::command(),
    ];
    for command in &mut commands {
        command.build();
    }
    commands
}

fn binary_command(name: &str) -> Option<clap::Command> {
    binary_commands().into_iter().find(|command| command.get_name() == name)
}

fn repo_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(name)
}

fn read_repo_file(name: &str) -> String {
    let path = repo_path(name);
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn parse_compose(text: &str) -> Value {
    let mut document: Value = serde_yaml_ng::from_str(text).expect("docker-compose.yml is valid YAML");
    document
        .apply_merge()
        .expect("the `<<:` merge keys of docker-compose.yml resolve");
    document
}

fn compose_file() -> Value {
    parse_compose(&read_repo_file("docker-compose.yml"))
}

fn services(document: &Value) -> &Mapping {
    document
        .get("services")
        .and_then(Value::as_mapping)
        .expect("docker-compose.yml has a `services:` mapping")
}

fn service<'a>(document: &'a Value, name: &str) -> &'a Value {
    services(document)
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
}

/// A scalar as the text compose hands to the container (`1`, `true` and `json` alike).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// `entrypoint:` followed by `command:`, each in list or string form.
fn service_argv(service: &Value) -> Vec<String> {
    let mut argv = Vec::new();
    for key in ["entrypoint", "command"] {
        match service.get(key) {
            Some(Value::Sequence(items)) => argv.extend(
                items
                    .iter()
                    .map(|item| scalar_text(item).unwrap_or_else(|| panic!("`{key}:` item {item:?} is not a scalar"))),
            ),
            Some(Value::String(line)) => argv.extend(line.split_whitespace().map(str::to_owned)),
            Some(other) => panic!("`{key}:` is neither a list nor a string: {other:?}"),
            None => {}
        }
    }
    argv
}

/// `environment:` in map or `KEY=VALUE` list form; `None` for a variable passed through from the
/// host without a value.
fn service_environment(service: &Value) -> Vec<(String, Option<String>)> {
    match service.get("environment") {
        None => Vec::new(),
        Some(Value::Mapping(map)) => map
            .iter()
            .map(|(key, value)| {
                let key = key
                    .as_str()
                    .unwrap_or_else(|| panic!("environment key {key:?} is not a string"));
                (key.to_owned(), scalar_text(value))
            })
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                let entry = item
                    .as_str()
                    .unwrap_or_else(|| panic!("environment entry {item:?} is not a string"));
                match entry.split_once('=') {
                    Some((key, value)) => (key.to_owned(), Some(value.to_owned())),
                    None => (entry.to_owned(), None),
                }
            })
            .collect(),
        Some(other) => panic!("`environment:` is neither a map nor a list: {other:?}"),
    }
}

/// Images built from the Dockerfile (the `image:` of every service with a `build:`).
fn rebound_images(document: &Value) -> BTreeSet<String> {
    services(document)
        .values()
        .filter(|service| service.get("build").is_some())
        .filter_map(|service| service.get("image").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Names of the services that run the rebound image.
fn rebound_services(document: &Value) -> Vec<String> {
    let images = rebound_images(document);
    services(document)
        .iter()
        .filter(|(_, service)| {
            service.get("build").is_some()
                || service
                    .get("image")
                    .and_then(Value::as_str)
                    .is_some_and(|image| images.contains(image))
        })
        .map(|(name, _)| name.as_str().expect("service names are strings").to_owned())
        .collect()
}

/// Checks one value the way the binary would parse it: split at the argument's value delimiter,
/// each part through the argument's value parser (numbers, durations kept as text, enums such as
/// `--log-format`).
fn check_value(arg: &clap::Arg, value: &str, what: &str, problems: &mut Vec<String>) {
    let parts: Vec<&str> = match arg.get_value_delimiter() {
        Some(delimiter) => value.split(delimiter).collect(),
        None => vec![value],
    };
    for part in parts {
        // clap offers no public way to run a value parser alone, so run it in a one-argument
        // command of its own.
        let probe = clap::Command::new("probe").no_binary_name(true).arg(
            clap::Arg::new("value")
                .required(true)
                .allow_hyphen_values(true)
                .ignore_case(arg.is_ignore_case_set())
                .value_parser(arg.get_value_parser().clone()),
        );
        if let Err(error) = probe.try_get_matches_from([part]) {
            let reason = error.to_string();
            let reason = reason.lines().next().unwrap_or_default();
            let reason = reason
                .strip_prefix("error: ")
                .unwrap_or(reason)
                .replace(" for '<value>'", "");
            problems.push(format!("{what}: value {part:?} is rejected: {reason}"));
        }
    }
}

/// Everything wrong with running `argv` with `environment` in service `name`; empty when the
/// binary accepts every flag, subcommand and `REBOUND_*` variable given.
fn service_problems(name: &str, argv: &[String], environment: &[(String, Option<String>)]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(program) = argv.first() else {
        return vec![format!(
            "service {name}: no `command:`, so it would only print the image's help; name the binary to run"
        )];
    };
    let binary = Path::new(program)
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or(program)
        .to_owned();
    let Some(root) = binary_command(&binary) else {
        return vec![format!(
            "service {name}: runs {binary:?}, which is none of the image's binaries {IMAGE_BINARIES:?}"
        )];
    };

    // Walk the command line as clap would: flags of the current (sub)command, then subcommands.
    let mut path = vec![root];
    let mut tokens = argv[1..].iter();
    while let Some(token) = tokens.next() {
        let command = path.last().expect("the path starts with the binary");
        let at = path.iter().map(clap::Command::get_name).collect::<Vec<_>>().join(" ");
        if token == "--" {
            break;
        }
        let (shown, attached, arg) = if let Some(long) = token.strip_prefix("--") {
            let (long, attached) = match long.split_once('=') {
                Some((long, value)) => (long, Some(value.to_owned())),
                None => (long, None),
            };
            let arg = command.get_arguments().find(|arg| {
                arg.get_long() == Some(long) || arg.get_all_aliases().is_some_and(|aliases| aliases.contains(&long))
            });
            (format!("--{long}"), attached, arg)
        } else if let Some(short) = token.strip_prefix('-').filter(|rest| !rest.is_empty()) {
            // `-X key=value`, `-Xkey=value` or `-X=key=value`.
            let mut chars = short.chars();
            let letter = chars.next().expect("not empty");
            let rest = chars.as_str();
            let rest = rest.strip_prefix('=').unwrap_or(rest);
            let attached = (!rest.is_empty()).then(|| rest.to_owned());
            let arg = command.get_arguments().find(|arg| arg.get_short() == Some(letter));
            (format!("-{letter}"), attached, arg)
        } else {
            let has_positionals = command.get_positionals().next().is_some();
            match command.find_subcommand(token.as_str()).cloned() {
                Some(subcommand) => path.push(subcommand),
                None if has_positionals => {}
                None => {
                    // What follows belongs to a subcommand that does not exist: stop here.
                    problems.push(format!(
                        "service {name}: `{at}` has no subcommand or positional argument for {token:?}"
                    ));
                    break;
                }
            }
            continue;
        };
        let Some(arg) = arg else {
            problems.push(format!("service {name}: `{at}` has no flag {shown}"));
            // Its value, if it had one, is no positional argument: skip a plain next word.
            let next_is_plain = tokens
                .as_slice()
                .first()
                .is_some_and(|next| !next.starts_with('-') && command.find_subcommand(next.as_str()).is_none());
            if attached.is_none() && next_is_plain {
                tokens.next();
            }
            continue;
        };
        if arg.get_action().takes_values() {
            let value = attached.or_else(|| tokens.next().cloned());
            match value {
                Some(value) => check_value(arg, &value, &format!("service {name}: {shown}"), &mut problems),
                None => problems.push(format!("service {name}: {shown} needs a value")),
            }
        } else if attached.is_some() {
            problems.push(format!("service {name}: {shown} takes no value"));
        }
    }

    // A variable is read by an argument of the binary or of a subcommand the command line enters.
    for (key, value) in environment.iter().filter(|(key, _)| key.starts_with("REBOUND_")) {
        let found = path.iter().rev().find_map(|command| {
            command
                .get_arguments()
                .find(|arg| arg.get_env() == Some(OsStr::new(key)))
        });
        let at = path.iter().map(clap::Command::get_name).collect::<Vec<_>>().join(" ");
        match (found, value) {
            (None, _) => problems.push(format!("service {name}: `{at}` reads no environment variable {key}")),
            (Some(arg), Some(value)) => check_value(arg, value, &format!("service {name}: {key}"), &mut problems),
            (Some(_), None) => {}
        }
    }
    problems
}

#[test]
fn compose_file_has_the_broker_the_topic_setup_and_the_three_services() {
    let document = compose_file();
    let names: BTreeSet<&str> = services(&document).keys().filter_map(Value::as_str).collect();
    for expected in ["kafka", "topics-init", "producer", "consumer", "scheduler"] {
        assert!(
            names.contains(expected),
            "docker-compose.yml lacks service {expected:?}; it has {names:?}"
        );
    }
}

#[test]
fn kafka_runs_the_apache_kafka_image_on_host_port_9092() {
    let document = compose_file();
    let kafka = service(&document, "kafka");
    let image = kafka.get("image").and_then(Value::as_str).expect("kafka has an image");
    assert!(
        image.starts_with("apache/kafka:"),
        "kafka should run the apache/kafka image, runs {image:?}"
    );
    // scripts/kafka-local.sh talks to the compose broker on 127.0.0.1:9092.
    let ports: Vec<String> = kafka
        .get("ports")
        .and_then(Value::as_sequence)
        .expect("kafka publishes ports")
        .iter()
        .filter_map(scalar_text)
        .collect();
    assert!(
        ports
            .iter()
            .any(|port| port == "127.0.0.1:9092:9092" || port == "9092:9092"),
        "kafka should publish 9092 on the host for scripts/kafka-local.sh, publishes {ports:?}"
    );
    let environment = service_environment(kafka);
    let advertised = environment
        .iter()
        .find(|(key, _)| key == "KAFKA_ADVERTISED_LISTENERS")
        .and_then(|(_, value)| value.clone())
        .expect("kafka sets KAFKA_ADVERTISED_LISTENERS");
    assert!(
        advertised.contains("://127.0.0.1:9092") || advertised.contains("://localhost:9092"),
        "kafka should advertise the host address 127.0.0.1:9092, advertises {advertised:?}"
    );
    assert!(
        kafka.get("healthcheck").is_some(),
        "kafka needs a healthcheck for `condition: service_healthy`"
    );
}

#[test]
fn rebound_services_connect_to_an_address_kafka_advertises() {
    let document = compose_file();
    let advertised = service_environment(service(&document, "kafka"))
        .into_iter()
        .find(|(key, _)| key == "KAFKA_ADVERTISED_LISTENERS")
        .and_then(|(_, value)| value)
        .expect("kafka sets KAFKA_ADVERTISED_LISTENERS");
    let advertised: Vec<&str> = advertised
        .split(',')
        .filter_map(|listener| listener.split_once("://").map(|(_, address)| address))
        .collect();
    for name in rebound_services(&document) {
        let service = service(&document, &name);
        let argv = service_argv(service);
        let from_flag = argv
            .iter()
            .position(|token| token == "--brokers")
            .and_then(|index| argv.get(index + 1).cloned());
        let from_env = service_environment(service)
            .into_iter()
            .find(|(key, _)| key == "REBOUND_BROKERS")
            .and_then(|(_, value)| value);
        let brokers = from_flag
            .or(from_env)
            .unwrap_or_else(|| panic!("service {name} sets neither --brokers nor REBOUND_BROKERS"));
        for broker in brokers.split(',') {
            assert!(
                advertised.contains(&broker),
                "service {name} connects to {broker:?}, which kafka does not advertise ({advertised:?})"
            );
        }
    }
}

#[test]
fn services_start_after_the_broker_is_healthy_and_the_topics_exist() {
    let document = compose_file();
    let condition = |service_name: &str, dependency: &str| -> Option<String> {
        service(&document, service_name)
            .get("depends_on")?
            .get(dependency)?
            .get("condition")?
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(
        condition("topics-init", "kafka").as_deref(),
        Some("service_healthy"),
        "topics-init must wait for a healthy kafka"
    );
    for name in ["producer", "consumer", "scheduler"] {
        assert_eq!(
            condition(name, "topics-init").as_deref(),
            Some("service_completed_successfully"),
            "{name} must wait until topics-init has created the topics"
        );
    }
}

#[test]
fn every_flag_and_rebound_variable_in_the_compose_file_is_accepted_by_its_binary() {
    let document = compose_file();
    let names = rebound_services(&document);
    assert!(
        names.len() >= 4,
        "expected topics-init, producer, consumer and scheduler to run the rebound image, found {names:?}"
    );
    let mut problems = Vec::new();
    for name in &names {
        let service = service(&document, name);
        problems.extend(service_problems(
            name,
            &service_argv(service),
            &service_environment(service),
        ));
    }
    assert!(
        problems.is_empty(),
        "docker-compose.yml does not match the binaries:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn an_unknown_flag_variable_subcommand_or_value_is_reported_by_name() {
    let document = parse_compose(
        r#"
x-env: &env
  REBOUND_BROKERS: kafka:29092
  REBOUND_NO_SUCH_SETTING: "1"
services:
  producer:
    build: .
    image: rebound:test
    command: ["rebound-producer", "generate", "--count", "ten", "--no-such-flag", "x"]
    environment:
      <<: *env
      REBOUND_LOG_FORMAT: yaml
  topics:
    image: rebound:test
    command: rebound topics create --brokers kafka:29092 --partitions 3 --dlq-partitons 1
  typo:
    image: rebound:test
    command: ["rebound", "topic", "create"]
  other:
    image: rebound:test
    command: ["rebound-schedular"]
"#,
    );
    let mut problems = Vec::new();
    for name in rebound_services(&document) {
        let service = service(&document, &name);
        problems.extend(service_problems(
            &name,
            &service_argv(service),
            &service_environment(service),
        ));
    }
    let report = problems.join("\n");
    for expected in [
        "service producer: `rebound-producer generate` has no flag --no-such-flag",
        "service producer: --count: value \"ten\" is rejected",
        "service producer: `rebound-producer generate` reads no environment variable REBOUND_NO_SUCH_SETTING",
        "service producer: REBOUND_LOG_FORMAT: value \"yaml\" is rejected",
        // --brokers is global, so it is accepted after the subcommand; the misspelt flag is not.
        "service topics: `rebound topics create` has no flag --dlq-partitons",
        "service typo: `rebound` has no subcommand or positional argument for \"topic\"",
        "service other: runs \"rebound-schedular\"",
    ] {
        assert!(
            report.contains(expected),
            "expected a problem {expected:?}, got:\n{report}"
        );
    }
    assert_eq!(problems.len(), 7, "unexpected problems:\n{report}");
}

#[test]
fn dockerfile_builds_and_installs_every_binary_the_compose_file_runs() {
    let dockerfile = read_repo_file("Dockerfile");
    assert!(
        dockerfile.contains("cargo build --release --locked"),
        "the Dockerfile should run `cargo build --release --locked`"
    );
    for binary in IMAGE_BINARIES {
        assert!(
            dockerfile.contains(&format!("--bin {binary}\n")) || dockerfile.contains(&format!("--bin {binary} ")),
            "the Dockerfile does not build `--bin {binary}`"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "the Dockerfile does not copy target/release/{binary} out of the builder"
        );
    }
    assert!(
        dockerfile.contains("/usr/local/bin"),
        "the Dockerfile should install the binaries into /usr/local/bin"
    );
    let clap_names: BTreeSet<String> = binary_commands()
        .iter()
        .map(|command| command.get_name().to_owned())
        .collect();
    assert_eq!(
        clap_names,
        IMAGE_BINARIES.iter().map(|name| (*name).to_owned()).collect(),
        "the clap command names should be the binary names"
    );

    let document = compose_file();
    for name in rebound_services(&document) {
        let argv = service_argv(service(&document, &name));
        let program = argv.first().map(String::as_str).unwrap_or_default();
        assert!(
            IMAGE_BINARIES.contains(&program),
            "service {name} runs {program:?}, which the Dockerfile does not build"
        );
    }
}

/// deploy/docker/compose.host-network.yml, the override for engines without a bridge network:
/// every service it names exists in docker-compose.yml and runs on the host's network without
/// published ports (which host networking cannot have), and each rebound service, with the
/// override's command and variables merged over its own, is still accepted by its binary.
#[test]
fn host_network_override_keeps_every_service_valid_on_the_host_network() {
    let base = compose_file();
    let overlay = parse_compose(&read_repo_file("deploy/docker/compose.host-network.yml"));
    let rebound = rebound_services(&base);
    let mut problems = Vec::new();
    for (name, changes) in services(&overlay) {
        let name = name.as_str().expect("service names are strings");
        let Some(original) = services(&base).get(name) else {
            problems.push(format!(
                "the override names service {name:?}, which docker-compose.yml lacks"
            ));
            continue;
        };
        if changes.get("network_mode").and_then(Value::as_str) != Some("host") {
            problems.push(format!(
                "service {name}: the override does not set `network_mode: host`"
            ));
        }
        if original.get("ports").is_some() && changes.get("ports").is_none() {
            problems.push(format!(
                "service {name}: publishes ports, which the override does not reset"
            ));
        }
        if !rebound.iter().any(|service| service == name) {
            continue;
        }
        let argv = if changes.get("command").is_some() {
            service_argv(changes)
        } else {
            service_argv(original)
        };
        let mut environment = service_environment(original);
        for (key, value) in service_environment(changes) {
            environment.retain(|(existing, _)| *existing != key);
            environment.push((key, value));
        }
        problems.extend(service_problems(name, &argv, &environment));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
