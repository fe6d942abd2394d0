//! Settings load in layers (defaults ← file ← usual env names ← SWITCHBOARD_*) and every
//! problem is one line naming the setting.
// figment::Jail fixes the closure's error type to figment::Error, which clippy finds large.
#![allow(clippy::result_large_err)]

use figment::Jail;
use secrecy::ExposeSecret;
use switchboard::config::Config;

const VALID: &[(&str, &str)] = &[
    ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
    ("TWILIO_AUTH_TOKEN", "12345678901234567890"),
    ("TWILIO_NUMBER", "+14155550100"),
    ("OPENAI_API_KEY", "sk-test"),
    ("PUBLIC_URL", "https://calls.example.com"),
];

fn set_valid(jail: &mut Jail) {
    for (k, v) in VALID {
        jail.set_env(k, v);
    }
}

#[test]
fn defaults_without_file_or_env() {
    Jail::expect_with(|_| {
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.server.bind, "127.0.0.1:8080");
        assert_eq!(c.engine.calls.max_concurrent, 100);
        assert_eq!(c.engine.openai.model, "gpt-realtime");
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("twilio.account_sid"), "{e}");
        assert!(e.contains("TWILIO_ACCOUNT_SID"), "{e}");
        assert!(!e.contains('\n'));
        Ok(())
    });
}

#[test]
fn usual_names_fill_the_accounts_and_digits_stay_text() {
    Jail::expect_with(|jail| {
        set_valid(jail);
        let c = Config::load(None).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        assert_eq!(
            c.engine.twilio.auth_token.expose_secret(),
            "12345678901234567890"
        );
        assert_eq!(c.engine.twilio.from_number, "+14155550100");
        assert_eq!(c.engine.public_url, "https://calls.example.com");
        Ok(())
    });
}

#[test]
fn file_then_env_layers_with_nesting_and_lists() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "config.toml",
            "public_url = \"https://file.example.com\"\n[calls]\nmax_concurrent = 7\nring_timeout_secs = 20\n[server]\nbind = \"127.0.0.1:9000\"\n",
        )?;
        jail.set_env("PUBLIC_URL", "https://usual.example.com");
        jail.set_env("SWITCHBOARD_CALLS__MAX_CONCURRENT", "9");
        jail.set_env("SWITCHBOARD_CALLS__ALLOWED_PREFIXES", "+1,+44");
        jail.set_env("SWITCHBOARD_TWILIO__AUTH_TOKEN", "from-env");
        jail.set_env("SWITCHBOARD_STORE__DATA_DIR", "/tmp/sb");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.engine.public_url, "https://usual.example.com");
        assert_eq!(c.engine.calls.max_concurrent, 9);
        assert_eq!(c.engine.calls.ring_timeout_secs, 20);
        assert_eq!(c.engine.calls.allowed_prefixes, vec!["+1", "+44"]);
        assert_eq!(c.engine.twilio.auth_token.expose_secret(), "from-env");
        assert_eq!(c.server.bind, "127.0.0.1:9000");
        assert_eq!(c.store.data_dir, std::path::PathBuf::from("/tmp/sb"));
        jail.set_env("SWITCHBOARD_PUBLIC_URL", "https://prefixed.example.com");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.engine.public_url, "https://prefixed.example.com");
        Ok(())
    });
}

#[test]
fn explicit_file_via_env_and_missing_file_is_named() {
    Jail::expect_with(|jail| {
        jail.create_file("other.toml", "[agent]\non_behalf_of = \"Alex\"\n")?;
        jail.set_env("SWITCHBOARD_CONFIG", "other.toml");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.engine.agent.on_behalf_of, "Alex");
        let e = Config::load(Some(std::path::Path::new("nope.toml")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nope.toml") && e.contains("does not exist"),
            "{e}"
        );
        Ok(())
    });
}

#[test]
fn a_bad_value_names_the_setting_and_its_source() {
    Jail::expect_with(|jail| {
        jail.set_env("SWITCHBOARD_CALLS__MAX_CONCURRENT", "lots");
        let e = Config::load(None).unwrap_err().to_string();
        assert!(e.contains("calls.max_concurrent"), "{e}");
        assert!(e.contains("SWITCHBOARD_CALLS__MAX_CONCURRENT"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.create_file("config.toml", "[server]\nbind = 8080\n")?;
        let e = Config::load(None).unwrap_err().to_string();
        assert!(
            e.contains("server.bind") && e.contains("config.toml"),
            "{e}"
        );
        Ok(())
    });
}

#[test]
fn public_bind_needs_a_token() {
    Jail::expect_with(|jail| {
        set_valid(jail);
        jail.set_env("SWITCHBOARD_SERVER__BIND", "0.0.0.0:8080");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("server.api_token") && e.contains("0.0.0.0:8080"),
            "{e}"
        );
        jail.set_env("SWITCHBOARD_SERVER__API_TOKEN", "s3cret");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        jail.set_env("SWITCHBOARD_SERVER__BIND", "no-port");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("server.bind"), "{e}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        set_valid(jail);
        jail.set_env("SWITCHBOARD_SERVER__BIND", "[::1]:8080");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(())
    });
}

#[test]
fn example_file_documents_the_defaults() {
    // Uncommenting every `# key = value` line of config.toml.example must load to the defaults.
    let text = include_str!("../config.toml.example");
    let uncommented: String = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let rest = t.strip_prefix("# ").unwrap_or("");
            let is_setting = rest.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            });
            if is_setting {
                rest.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let settings = uncommented
        .lines()
        .filter(|l| l.contains(" = ") && !l.starts_with('#'))
        .count();
    // store.data_dir's default is the platform's per-user folder, so the example describes it
    // in words (and by its variable) instead of a `# data_dir = ` line.
    assert!(
        settings >= 24,
        "the example should show every setting, found {settings}"
    );
    Jail::expect_with(|jail| {
        jail.create_file("config.toml", &uncommented)?;
        let c = Config::load(None).map_err(|e| e.to_string())?;
        let d = Config::default();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
        Ok(())
    });
}

#[test]
fn single_underscore_nesting_is_caught() {
    Jail::expect_with(|jail| {
        jail.set_env("SWITCHBOARD_TWILIO_AUTH_TOKEN", "x");
        let e = Config::load(None).unwrap_err().to_string();
        assert!(e.contains("SWITCHBOARD_TWILIO__AUTH_TOKEN"), "{e}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("SWITCHBOARD_PUBLIC_URL", "https://x.example.com");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.engine.public_url, "https://x.example.com");
        Ok(())
    });
}

#[test]
fn a_broken_file_is_named_on_one_line() {
    Jail::expect_with(|jail| {
        jail.create_file("config.toml", "[calls\nmax_concurrent = 1\n")?;
        let e = Config::load(None).unwrap_err().to_string();
        assert!(
            e.starts_with("config file ") && e.contains("config.toml"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        Ok(())
    });
}

#[test]
fn a_misspelled_key_or_section_in_the_file_names_the_nearest_setting() {
    Jail::expect_with(|jail| {
        jail.create_file("config.toml", "[calls]\nmax_concurent = 7\n")?;
        let e = Config::load(None).unwrap_err().to_string();
        assert!(e.starts_with("calls.max_concurent: not a setting"), "{e}");
        assert!(e.contains("config.toml"), "{e}");
        assert!(
            e.contains("did you mean calls.max_concurrent (SWITCHBOARD_CALLS__MAX_CONCURRENT)"),
            "{e}"
        );
        assert!(e.contains("accepted in [calls]: max_concurrent,"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.create_file("config.toml", "[call]\nmax_concurrent = 7\n")?;
        let e = Config::load(None).unwrap_err().to_string();
        assert!(e.starts_with("[call]: not a setting"), "{e}");
        assert!(e.contains("did you mean the section [calls]"), "{e}");
        assert!(
            e.contains("accepted sections: twilio, openai, calls"),
            "{e}"
        );
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.create_file("config.toml", "public_ulr = \"https://x.example.com\"\n")?;
        let e = Config::load(None).unwrap_err().to_string();
        assert!(e.starts_with("public_ulr: not a setting"), "{e}");
        assert!(e.contains("did you mean public_url"), "{e}");
        Ok(())
    });
}

#[test]
fn a_misspelled_variable_names_the_nearest_setting_and_its_variable() {
    Jail::expect_with(|jail| {
        jail.set_env("SWITCHBOARD_CALLS__MAX_CONCURENT", "9");
        let e = Config::load(None).unwrap_err().to_string();
        assert!(e.contains("SWITCHBOARD_CALLS__MAX_CONCURENT"), "{e}");
        assert!(
            e.contains("did you mean calls.max_concurrent (SWITCHBOARD_CALLS__MAX_CONCURRENT)"),
            "{e}"
        );
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("SWITCHBOARD_SERVR__BIND", "127.0.0.1:1");
        let e = Config::load(None).unwrap_err().to_string();
        assert!(e.contains("did you mean the section [server]"), "{e}");
        assert!(e.contains("SWITCHBOARD_SERVER__BIND"), "{e}");
        Ok(())
    });
}

#[test]
fn every_setting_is_known_and_documented() {
    let text = include_str!("../config.toml.example");
    for s in switchboard::config::SETTINGS {
        let key = s.rsplit('.').next().unwrap();
        assert!(
            text.contains(&format!("# {key} = "))
                || text.contains(&switchboard::config::env_name(s)),
            "config.toml.example does not document {s}"
        );
    }
}

#[test]
fn an_empty_api_token_is_refused() {
    Jail::expect_with(|jail| {
        set_valid(jail);
        jail.set_env("SWITCHBOARD_SERVER__API_TOKEN", "  ");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("server.api_token: is set but empty"), "{e}");
        assert!(e.contains("SWITCHBOARD_SERVER__API_TOKEN"), "{e}");
        Ok(())
    });
}

#[test]
fn a_relative_data_dir_in_a_file_is_taken_from_the_files_folder() {
    Jail::expect_with(|jail| {
        std::fs::create_dir_all(jail.directory().join("conf")).map_err(|e| e.to_string())?;
        jail.create_file("conf/switchboard.toml", "[store]\ndata_dir = \"calls\"\n")?;
        // Started elsewhere (an assistant starts servers in `/`): the file's folder counts.
        std::fs::create_dir_all(jail.directory().join("elsewhere")).map_err(|e| e.to_string())?;
        std::env::set_current_dir(jail.directory().join("elsewhere")).map_err(|e| e.to_string())?;
        let path = jail.directory().join("conf/switchboard.toml");
        let c = Config::load(Some(&path)).map_err(|e| e.to_string())?;
        assert_eq!(
            c.store.data_dir,
            jail.directory().join("conf").join("calls")
        );
        // The same relative path from the environment stays relative to the working directory.
        jail.set_env("SWITCHBOARD_STORE__DATA_DIR", "calls");
        let c = Config::load(Some(&path)).map_err(|e| e.to_string())?;
        assert_eq!(c.store.data_dir, std::path::PathBuf::from("calls"));
        Ok(())
    });
}

#[test]
fn the_default_data_dir_is_absolute_and_per_user() {
    Jail::expect_with(|_| {
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert!(c.store.data_dir.is_absolute(), "{:?}", c.store.data_dir);
        assert!(
            c.store.data_dir.ends_with("switchboard"),
            "{:?}",
            c.store.data_dir
        );
        Ok(())
    });
}
