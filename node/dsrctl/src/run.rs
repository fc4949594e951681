//! One `dsrctl` invocation: the verb's calls through [`Client`], the reply turned into a
//! view and printed in the chosen format.

use super::cli::{
    ApplyArgs, BackendCmd, Cli, Command, FarmCmd, Format, LeaderCmd, MemberCmd, PersistenceCmd,
    StatsArgs,
};
use super::client::{Client, read_token, tls_config};
use super::error::CtlError;
use super::view::{
    ApplyView, BackendsView, ExportView, FarmShowView, FarmView, FarmsView, LeaderView,
    MembershipView, PersistenceView, StatsView, StatusView, VersionView, WriteView,
};
use super::{diff, persist, render, request, stats};
use proto::admin::v1 as pb;
use serde::Serialize;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Runs `cli`, printing results to `out`; `tty` says whether `out` is a terminal (then
/// `stats --watch` redraws in place).
pub fn run(cli: Cli, out: &mut dyn Write, tty: bool) -> Result<(), CtlError> {
    if cli.command.is_local() {
        return Ok(super::cli::local(&cli.command, out)?);
    }
    let apply_text = match &cli.command {
        Command::Apply(a) => Some(read_apply_file(&a.file)?),
        _ => None,
    };
    let token = cli.token_file.as_deref().map(read_token).transpose()?;
    let tls = match &cli.ca_file {
        Some(ca) => Some(tls_config(
            ca,
            cli.cert_file.as_deref().zip(cli.key_file.as_deref()),
        )?),
        None => None,
    };
    let mut client = Client::new(cli.endpoint.clone(), token, tls, cli.timeout);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CtlError::Runtime)?;
    let ctx = Ctx {
        format: cli.output,
        out,
        tty,
    };
    rt.block_on(dispatch(cli.command, &mut client, ctx, apply_text))
}

struct Ctx<'a> {
    format: Format,
    out: &'a mut dyn Write,
    tty: bool,
}

impl Ctx<'_> {
    fn emit<T: Serialize>(
        &mut self,
        view: &T,
        table: impl FnOnce(&T) -> String,
    ) -> Result<(), CtlError> {
        self.emit_wide(view, |v, _| table(v))
    }

    /// As `emit`, for views whose table has more columns under `-o wide`.
    fn emit_wide<T: Serialize>(
        &mut self,
        view: &T,
        table: impl FnOnce(&T, bool) -> String,
    ) -> Result<(), CtlError> {
        let text = match self.format {
            Format::Table => table(view, false),
            Format::Wide => table(view, true),
            Format::Json => render::json(view),
        };
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }
}

async fn dispatch(
    command: Command,
    client: &mut Client,
    mut ctx: Ctx<'_>,
    apply_text: Option<String>,
) -> Result<(), CtlError> {
    match command {
        Command::Completion { .. } | Command::Man => Ok(()),
        Command::Status => {
            let a = client
                .call(async |mut api| api.status(pb::StatusRequest {}).await)
                .await?;
            ctx.emit(&StatusView::from(a.reply), render::status)
        }
        Command::Version => {
            let a = client
                .call(async |mut api| api.status(pb::StatusRequest {}).await)
                .await?;
            ctx.emit(
                &VersionView::from(StatusView::from(a.reply)),
                render::version,
            )
        }
        Command::Farm(cmd) => farm(cmd, client, ctx).await,
        Command::Backend(cmd) => backend(cmd, client, ctx).await,
        Command::Apply(args) => apply(&args, apply_text.unwrap_or_default(), client, ctx).await,
        Command::Export => {
            let a = client
                .call(async |mut api| api.export(pb::ExportRequest {}).await)
                .await?;
            let v = ExportView {
                answered_by: a.reply.answered_by,
                config: a.reply.config,
            };
            ctx.emit(&v, render::export)
        }
        Command::Stats(args) => stats_cmd(&args, client, ctx).await,
        Command::Member(MemberCmd::Add { id, address }) => {
            let req = pb::AddMemberRequest { id, address };
            let a = client
                .call(async |mut api| api.add_member(req.clone()).await)
                .await?;
            ctx.emit(&MembershipView::from(a.reply), render::membership)
        }
        Command::Member(MemberCmd::Remove { id }) => {
            let a = client
                .call(async |mut api| api.remove_member(pb::RemoveMemberRequest { id }).await)
                .await?;
            ctx.emit(&MembershipView::from(a.reply), render::membership)
        }
        Command::Leader(LeaderCmd::Transfer { to }) => {
            let a = client
                .call(async |mut api| api.transfer_leader(pb::TransferLeaderRequest { to }).await)
                .await?;
            let v = LeaderView {
                leader: (a.reply.leader != 0).then_some(a.reply.leader),
                answered_by: a.reply.answered_by,
            };
            ctx.emit(&v, render::leader)
        }
        Command::Persistence(cmd) => persistence(cmd, client, ctx).await,
    }
}

fn written(done: String, r: pb::WriteReply) -> WriteView {
    WriteView {
        done,
        applied_index: r.applied_index,
        answered_by: r.answered_by,
    }
}

async fn farm(cmd: FarmCmd, client: &mut Client, mut ctx: Ctx<'_>) -> Result<(), CtlError> {
    match cmd {
        FarmCmd::List => {
            let a = client
                .call(async |mut api| api.list_farms(pb::ListFarmsRequest {}).await)
                .await?;
            let v = FarmsView {
                answered_by: a.reply.answered_by,
                farms: a.reply.farms.into_iter().map(FarmView::from).collect(),
            };
            ctx.emit_wide(&v, render::farms)
        }
        FarmCmd::Show { name } => {
            let (answered_by, farm) = get_farm(client, &name).await?;
            let v = FarmShowView {
                answered_by,
                farm: farm.into(),
            };
            ctx.emit_wide(&v, render::farm_show)
        }
        FarmCmd::Add(args) => {
            let req = request::create_farm(&args);
            let a = client
                .call(async |mut api| api.create_farm(req.clone()).await)
                .await?;
            ctx.emit(
                &written(format!("farm {} created", args.name), a.reply),
                render::write,
            )
        }
        FarmCmd::Set(args) => {
            let (_, current) = get_farm(client, &args.name).await?;
            let req = request::update_farm(current, &args);
            let a = client
                .call(async |mut api| api.update_farm(req.clone()).await)
                .await?;
            ctx.emit(
                &written(format!("farm {} updated", args.name), a.reply),
                render::write,
            )
        }
        FarmCmd::Delete { name } => {
            let req = pb::DeleteFarmRequest { name: name.clone() };
            let a = client
                .call(async |mut api| api.delete_farm(req.clone()).await)
                .await?;
            ctx.emit(
                &written(format!("farm {name} deleted"), a.reply),
                render::write,
            )
        }
    }
}

async fn get_farm(client: &mut Client, name: &str) -> Result<(u64, pb::Farm), CtlError> {
    let req = pb::GetFarmRequest { name: name.into() };
    let a = client
        .call(async |mut api| api.get_farm(req.clone()).await)
        .await?;
    let farm = a.reply.farm.ok_or(CtlError::BadReply {
        endpoint: a.endpoint,
        what: "farm",
    })?;
    Ok((a.reply.answered_by, farm))
}

async fn backend(cmd: BackendCmd, client: &mut Client, mut ctx: Ctx<'_>) -> Result<(), CtlError> {
    match cmd {
        BackendCmd::List { farm } => {
            let req = pb::ListBackendsRequest {
                farm: farm.clone(),
                local: false,
            };
            let a = client
                .call(async |mut api| api.list_backends(req.clone()).await)
                .await?;
            let v = BackendsView {
                answered_by: a.reply.answered_by,
                farm,
                backends: a.reply.backends.into_iter().map(Into::into).collect(),
            };
            ctx.emit_wide(&v, render::backends)
        }
        BackendCmd::Add(args) => {
            let req = request::add_backend(&args);
            let a = client
                .call(async |mut api| api.add_backend(req.clone()).await)
                .await?;
            let done = format!("backend {} added to farm {}", args.name, args.farm);
            ctx.emit(&written(done, a.reply), render::write)
        }
        BackendCmd::Set(args) => {
            let req = request::update_backend(&args);
            let a = client
                .call(async |mut api| api.update_backend(req.clone()).await)
                .await?;
            let done = format!("backend {} of farm {} updated", args.name, args.farm);
            ctx.emit(&written(done, a.reply), render::write)
        }
        BackendCmd::Delete { farm, name } => {
            let req = pb::DeleteBackendRequest {
                farm: farm.clone(),
                name: name.clone(),
            };
            let a = client
                .call(async |mut api| api.delete_backend(req.clone()).await)
                .await?;
            let done = format!("backend {name} removed from farm {farm}");
            ctx.emit(&written(done, a.reply), render::write)
        }
    }
}

async fn persistence(
    cmd: PersistenceCmd,
    client: &mut Client,
    mut ctx: Ctx<'_>,
) -> Result<(), CtlError> {
    match cmd {
        PersistenceCmd::List(args) => {
            let req = request::list_persistence(&args);
            let a = client
                .call(async |mut api| api.list_persistence(req.clone()).await)
                .await?;
            let v = PersistenceView::new(args.farm, req.client, a.reply);
            // Ages are shown against this machine's clock (the reply carries the leader's
            // times; the nodes' clocks are what expiry uses).
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            ctx.emit(&v, |v| persist::list(v, now_ms))
        }
        PersistenceCmd::Flush(args) => {
            let req = request::flush_persistence(&args);
            let a = client
                .call(async |mut api| api.flush_persistence(req.clone()).await)
                .await?;
            let done = match &args.backend {
                Some(b) => format!(
                    "persistence entries of farm {} pinned to backend {b} flushed",
                    args.farm
                ),
                None => format!("persistence entries of farm {} flushed", args.farm),
            };
            ctx.emit(&written(done, a.reply), render::write)
        }
    }
}

/// The apply file's text, checked to be TOML here so a typo is pointed at by line and column
/// before anything is sent.
fn read_apply_file(path: &Path) -> Result<String, CtlError> {
    let err = |reason: String| CtlError::ApplyFile {
        path: path.to_owned(),
        reason,
    };
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| err(format!("cannot read standard input: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?
    };
    if let Err(e) = toml::from_str::<toml::Table>(&text) {
        let at = e.span().map_or_else(String::new, |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {col}: ")
        });
        return Err(err(format!("{at}{}", e.message().trim())));
    }
    Ok(text)
}

async fn apply(
    args: &ApplyArgs,
    config: String,
    client: &mut Client,
    mut ctx: Ctx<'_>,
) -> Result<(), CtlError> {
    let req = pb::ApplyRequest {
        config,
        dry_run: args.dry_run,
        prune: args.prune,
    };
    let a = client
        .call(async |mut api| api.apply(req.clone()).await)
        .await?;
    let v = ApplyView::new(a.reply, args.dry_run);
    let file = args.file.display().to_string();
    ctx.emit(&v, |v| diff::render(v, &file))
}

async fn stats_cmd(args: &StatsArgs, client: &mut Client, ctx: Ctx<'_>) -> Result<(), CtlError> {
    let node = args.node.unwrap_or(0);
    let mut prev: Option<(StatsView, Instant)> = None;
    let mut shown = 0u64;
    loop {
        let at = Instant::now();
        let a = client
            .call(async |mut api| api.stats(pb::StatsRequest { node }).await)
            .await?;
        let mut v = StatsView::from(a.reply);
        if let Some((p, t)) = &prev {
            v = stats::with_rates(p, v, at.duration_since(*t));
        }
        let text = stats::frame(&v, ctx.format, args.watch, ctx.tty);
        ctx.out.write_all(text.as_bytes())?;
        ctx.out.flush()?;
        shown += 1;
        if !args.watch || args.count.is_some_and(|c| shown >= c) {
            return Ok(());
        }
        prev = Some((v, at));
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
