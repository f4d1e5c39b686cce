//! `sis-sim`: a stand-in for SIS on loopback. `sis-sim serve` runs it; `sis-sim token`
//! asks a running one for a bearer token and writes it where the vault agent would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use nvca::sim::admin::{AdminClient, TokenRequest};
use nvca::sim::control_plane_nats::{self, ControlPlaneNats};
use nvca::sim::{Faults, SimConfig, SimNats};
use nvca::sis::token::{vault_secrets_json, write_token_file};

#[derive(Parser)]
#[command(
    name = "sis-sim",
    version,
    about = "A stand-in for NVCF's SIS (ICMS), for tests and demos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the SIS endpoints and the admin API.
    Serve(ServeArgs),
    /// Get a bearer token from a running sis-sim and write it to a file.
    Token(TokenArgs),
    /// Write a nats-server configuration of the control plane (auth callout for PSAT
    /// agents, as NVIDIA's chart sets it) and its keys, for `serve --nats-control-plane`.
    NatsConfig(NatsConfigArgs),
}

#[derive(clap::Args)]
struct NatsConfigArgs {
    /// The loopback port nats-server is to listen on.
    #[arg(long)]
    port: u16,
    /// Where to write `nats.conf` and `control-plane-nats.json` (the keys, mode 0600);
    /// JetStream keeps its files in `js/` below it.
    #[arg(long)]
    dir: PathBuf,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where to listen; loopback only. Port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// NATS server with JetStream; without it, deploying (publishing) is refused.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    #[arg(long, requires = "nats_password")]
    nats_user: Option<String>,
    #[arg(long, requires = "nats_user")]
    nats_password: Option<String>,
    /// The keys `sis-sim nats-config` wrote: publish as SIS's user of that server and
    /// answer its auth callout (agents connecting with their PSAT).
    #[arg(long, requires = "nats_url", conflicts_with_all = ["nats_user", "nats_password"])]
    nats_control_plane: Option<PathBuf>,
    /// Keep the state (clusters, requests, tokens) in this JSON file across restarts.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Also write a token at start, in the vault secrets-file shape.
    #[arg(long)]
    token_out: Option<PathBuf>,
    /// Answer the JWKS push with 404, as SIS does without OIDC cluster identity.
    #[arg(long)]
    no_oidc_identity: bool,
    /// Probability of answering 500.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Delay every SIS answer by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Expire the token in use after this many authenticated calls (once).
    #[arg(long)]
    unauthorized_after: Option<u64>,
    /// Probability of answering 200 with a truncated body.
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
    /// Probability of closing the connection without an answer.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Publish every queue message twice.
    #[arg(long)]
    duplicate_messages: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum TokenFormat {
    /// `{"kv":{"tokens":{"icms":"…"}}}`, as the vault agent renders /home/app/vault/secrets.json.
    Vault,
    /// The bare token, like a projected service-account token file.
    Raw,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The running simulator.
    #[arg(long, env = "SIS_SIM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The file to write (atomically, mode 0600).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "vault")]
    format: TokenFormat,
    /// Bind the token to one cluster: agent calls for another cluster get 409.
    #[arg(long)]
    cluster_id: Option<String>,
    /// Authorities (repeatable); the default covers every call nvca makes.
    #[arg(long = "authority")]
    authorities: Vec<String>,
}

fn main() -> ExitCode {
    nvca::logging::init("info", nvca::logging::LogFormat::Text);
    let cli = Cli::parse();
    nvca::process::block_on(
        "sis-sim",
        async {
            match cli.command {
                Command::Serve(args) => serve(args).await,
                Command::Token(args) => token(args).await,
                Command::NatsConfig(args) => nats_config(args),
            }
        },
        |_| "sis_sim",
    )
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    if !args.listen.ip().is_loopback() {
        return Err(format!(
            "--listen {} is not a loopback address; sis-sim serves 127.0.0.1 only",
            args.listen
        ));
    }
    let control_plane = match &args.nats_control_plane {
        Some(path) => Some(ControlPlaneNats::load(path)?),
        None => None,
    };
    let nats = args.nats_url.map(|url| match &control_plane {
        Some(secrets) => SimNats {
            url,
            user: Some(control_plane_nats::SIS_USER.to_string()),
            password: Some(secrets.sis_password.clone()),
            auth_callout: Some(secrets.callout_keys()),
        },
        None => SimNats {
            url,
            user: args.nats_user,
            password: args.nats_password,
            auth_callout: None,
        },
    });
    let config = SimConfig {
        listen: args.listen,
        nats,
        state_file: args.state_file,
        faults: Faults {
            error_rate: args.error_rate,
            latency_ms: args.latency_ms,
            unauthorized_after: args.unauthorized_after,
            malformed_rate: args.malformed_rate,
            drop_rate: args.drop_rate,
            duplicate_messages: args.duplicate_messages,
            ..Faults::default()
        },
        oidc_identity: !args.no_oidc_identity,
    };
    let handle = nvca::sim::start(config).await.map_err(|e| e.to_string())?;
    if let Some(path) = args.token_out {
        let token = AdminClient::new(handle.base_url())
            .issue_token(None)
            .await
            .map_err(|e| e.to_string())?;
        write_token_file(&path, &vault_secrets_json(&token))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!("sis-sim listening on {}", handle.base_url());
    tokio::select! {
        _ = handle.wait() => Ok(()),
        _ = nvca::process::wait_for_signal() => Ok(()),
    }
}

async fn token(args: TokenArgs) -> Result<(), String> {
    let request = TokenRequest {
        authorities: (!args.authorities.is_empty()).then_some(args.authorities),
        cluster_id: args.cluster_id,
    };
    let token = AdminClient::new(&args.url)
        .issue_token_with(request)
        .await
        .map_err(|e| format!("{e}; is sis-sim running at {}?", args.url))?;
    let contents = match args.format {
        TokenFormat::Vault => vault_secrets_json(&token),
        TokenFormat::Raw => format!("{token}\n"),
    };
    write_token_file(&args.out, &contents)
        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    eprintln!("sis-sim: token written to {}", args.out.display());
    Ok(())
}

fn nats_config(args: NatsConfigArgs) -> Result<(), String> {
    let secrets = ControlPlaneNats::generate();
    let store = args.dir.join("js");
    std::fs::create_dir_all(&store)
        .map_err(|e| format!("cannot create {}: {e}", store.display()))?;
    let config = args.dir.join("nats.conf");
    std::fs::write(&config, secrets.server_config(args.port, &store)?)
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let keys = args.dir.join("control-plane-nats.json");
    secrets.save(&keys)?;
    println!("{}", config.display());
    println!("{}", keys.display());
    Ok(())
}
