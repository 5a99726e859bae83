//! A tiny CRI image-service client, for the demo and for poking at pullgate by hand.
//!
//! ```text
//! cri pull   --socket S IMAGE [--namespace NS] [--username U --password P]
//! cri status --socket S IMAGE
//! cri list   --socket S
//! ```
//!
//! `pull` prints the image reference containerd reports. `status` prints the image's id, tags and
//! digests, or exits 1 when the image is not present. Any gRPC error is printed to stderr as
//! `CODE: message` (CODE as in the gRPC spec, e.g. `UNKNOWN`) and exits 1.
//!
//! Run with `cargo run --quiet --release --example cri -- pull --socket /run/pullgate/pullgate.sock IMAGE`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hyper_util::rt::TokioIo;
use pullgate::cri::proto::image_service_client::ImageServiceClient;
use pullgate::cri::proto::{
    AuthConfig, Image, ImageSpec, ImageStatusRequest, ListImagesRequest, PodSandboxConfig, PodSandboxMetadata,
    PullImageRequest,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

#[derive(Parser)]
#[command(name = "cri", about = "A tiny CRI image-service client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Target {
    /// CRI socket: pullgate's or containerd's.
    #[arg(long)]
    socket: PathBuf,
    /// Give up on the call after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Pull an image, as the kubelet does for a pod.
    Pull {
        #[command(flatten)]
        target: Target,
        image: String,
        /// Kubernetes namespace of the (pretend) pod asking for the image.
        #[arg(long)]
        namespace: Option<String>,
        /// Registry user name (sent in the request's AuthConfig).
        #[arg(long, requires = "password")]
        username: Option<String>,
        /// Registry password.
        #[arg(long, requires = "username")]
        password: Option<String>,
    },
    /// Show one image: id, tags, digests. Exits 1 when it is not present.
    Status {
        #[command(flatten)]
        target: Target,
        image: String,
    },
    /// List all images.
    List {
        #[command(flatten)]
        target: Target,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cri: cannot start tokio: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(status) => {
            eprintln!("{}: {}", code_name(status.code()), status.message());
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, Status> {
    match command {
        Command::Pull { target, image, namespace, username, password } => {
            let auth = match (username, password) {
                (Some(username), Some(password)) => Some(AuthConfig { username, password, ..Default::default() }),
                _ => None,
            };
            let sandbox_config = namespace.map(|namespace| PodSandboxConfig {
                metadata: Some(PodSandboxMetadata { name: "cri-example".into(), namespace, ..Default::default() }),
                ..Default::default()
            });
            let request = PullImageRequest { image: spec(&image), auth, sandbox_config };
            let response = client(&target).pull_image(request).await?.into_inner();
            println!("{}", response.image_ref);
        }
        Command::Status { target, image } => {
            let request = ImageStatusRequest { image: spec(&image), verbose: false };
            match client(&target).image_status(request).await?.into_inner().image {
                Some(found) => print_image(&found),
                None => {
                    println!("{image}: not present");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::List { target } => {
            let images = client(&target).list_images(ListImagesRequest { filter: None }).await?.into_inner().images;
            if images.is_empty() {
                println!("(no images)");
            }
            for image in &images {
                print_image(image);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn client(target: &Target) -> ImageServiceClient<Channel> {
    let socket = target.socket.clone();
    // The authority is never looked at: every connection goes to the Unix socket.
    let channel = Endpoint::from_static("http://cri.invalid")
        .timeout(Duration::from_secs(target.timeout))
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                // Name the socket: a bare "No such file or directory" says nothing about which.
                UnixStream::connect(&socket)
                    .await
                    .map(TokioIo::new)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", socket.display())))
            }
        }));
    // containerd's own limit; image lists on a busy node exceed tonic's 4 MiB default.
    ImageServiceClient::new(channel).max_decoding_message_size(16 << 20)
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec { image: image.to_owned(), ..Default::default() })
}

fn print_image(image: &Image) {
    println!("{}", image.id);
    for tag in &image.repo_tags {
        println!("  tag     {tag}");
    }
    for digest in &image.repo_digests {
        println!("  digest  {digest}");
    }
}

/// The gRPC spec's names, which is how CRI errors are usually quoted (tonic's `Display` says
/// "Unknown error" instead of `UNKNOWN`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
