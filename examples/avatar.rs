//! One photo in, one head out: the Visage plugin in a window.
//!
//! ```text
//! cargo run --release --example avatar [-- [PHOTO] [options]]
//! ```
//!
//! Shows the head built from `PHOTO` (default: `assets/photos/astronaut.png`) with an orbit
//! camera (drag with the left mouse button to rotate, scroll to zoom) and a side panel with the
//! photo, the pipeline's progress, the head model's details and any error. Drop an image file
//! on the window to build a new head from it.
//!
//! Options:
//! - `--screenshot OUT.png`: once the head is ready and every render pipeline has compiled,
//!   write a PNG of the view. Without `--window` this renders offscreen: no window or display
//!   server is needed (only a Vulkan driver; Mesa's software lavapipe works).
//! - `--exit-after-ready`: exit once the head is ready (after the screenshot, if any). The exit
//!   status is non-zero if the request failed or `--timeout` passed first.
//! - `--window`: with `--screenshot`, capture the real window instead of rendering offscreen.
//! - `--size WxH`: window or image size in pixels (default 1280x720).
//! - `--timeout SECONDS`: with `--exit-after-ready`, give up after this long (default 600).
//! - `--model PATH`: the head model file (default: the shipped model).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bevy::app::ScheduleRunnerPlugin;
use bevy::camera::primitives::MeshAabb;
use bevy::camera::visibility::RenderLayers;
use bevy::camera::{CameraOutputMode, RenderTarget, Viewport};
use bevy::input::mouse::{AccumulatedMouseMotion, AccumulatedMouseScroll, MouseScrollUnit};
use bevy::prelude::*;
use bevy::render::render_resource::{BlendState, PipelineCache, TextureFormat, TextureUsages};
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured};
use bevy::render::{Render, RenderApp, RenderSystems};
use bevy::window::{ExitCondition, FileDragAndDrop};
use bevy::winit::WinitPlugin;
use bevy_egui::{
    EguiContexts, EguiGlobalSettings, EguiPlugin, EguiPrimaryContextPass, EguiTextureHandle,
    PrimaryEguiContext, egui, input::EguiWantsInput,
};
use bevy_visage::prelude::*;

/// Width of the side panel in logical pixels.
const PANEL_WIDTH: f32 = 300.0;
/// Frames without waiting render pipelines required before a screenshot.
const SETTLE_FRAMES: u32 = 5;

fn main() -> AppExit {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("avatar: {message}\n\n{USAGE}");
            return AppExit::error();
        }
    };
    if args.help {
        println!("{USAGE}");
        return AppExit::Success;
    }

    let mut app = App::new();
    let offscreen = args.screenshot.is_some() && !args.window;
    if offscreen {
        app.add_plugins(
            DefaultPlugins
                .set(WindowPlugin {
                    primary_window: None,
                    exit_condition: ExitCondition::DontExit,
                    ..default()
                })
                .disable::<WinitPlugin>(),
        )
        .add_plugins(ScheduleRunnerPlugin::run_loop(Duration::from_secs_f64(
            1.0 / 60.0,
        )));
    } else {
        app.add_plugins(DefaultPlugins.set(WindowPlugin {
            primary_window: Some(Window {
                title: "Visage avatar".into(),
                resolution: (args.size.x, args.size.y).into(),
                ..default()
            }),
            ..default()
        }));
    }

    let mut settings = VisageSettings::default();
    if let Some(model) = &args.model {
        settings.model_path = model.clone();
    }
    app.add_plugins(EguiPlugin::default())
        .add_plugins(VisagePlugin { settings })
        .insert_resource(ClearColor(Color::srgb(0.12, 0.13, 0.15)))
        .insert_resource(GlobalAmbientLight {
            color: Color::WHITE,
            brightness: 250.0,
            ..default()
        })
        .insert_resource(Capture {
            out: args.screenshot.clone(),
            exit_after_ready: args.exit_after_ready,
            timeout: args.timeout,
            settled_frames: 0,
            requested: false,
        })
        .insert_resource(Viewer {
            photo: args.photo.clone(),
            offscreen,
            size: args.size,
            ..default()
        })
        .add_systems(Startup, setup)
        .add_systems(
            Update,
            (
                start_from_dropped_files,
                frame_new_head.after(VisageSystems::Spawn),
                orbit_camera,
                capture_when_ready.after(VisageSystems::Spawn),
            ),
        )
        .add_systems(EguiPrimaryContextPass, side_panel);

    // Count the render pipelines still compiling, for the screenshot.
    let waiting = WaitingPipelines::default();
    app.insert_resource(waiting.clone());
    if let Some(render_app) = app.get_sub_app_mut(RenderApp) {
        render_app.insert_resource(waiting).add_systems(
            Render,
            count_waiting_pipelines.in_set(RenderSystems::Cleanup),
        );
    }

    app.run()
}

const USAGE: &str = "usage: avatar [PHOTO] [--screenshot OUT.png] [--exit-after-ready] [--window] \
[--size WxH] [--timeout SECONDS] [--model PATH]

PHOTO defaults to assets/photos/astronaut.png. See the top of examples/avatar.rs.";

/// Command-line options.
struct Args {
    photo: PathBuf,
    screenshot: Option<PathBuf>,
    exit_after_ready: bool,
    window: bool,
    size: UVec2,
    timeout: Duration,
    model: Option<PathBuf>,
    help: bool,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut args = Args {
            photo: default_photo(),
            screenshot: None,
            exit_after_ready: false,
            window: false,
            size: UVec2::new(1280, 720),
            timeout: Duration::from_secs(600),
            model: None,
            help: false,
        };
        let mut photo = None;
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or_else(|| format!("`{name}` needs a value"));
            match arg.as_str() {
                "--screenshot" => args.screenshot = Some(value("--screenshot")?.into()),
                "--exit-after-ready" => args.exit_after_ready = true,
                "--window" => args.window = true,
                "--model" => args.model = Some(value("--model")?.into()),
                "--size" => {
                    let v = value("--size")?;
                    let parsed = v
                        .split_once('x')
                        .and_then(|(w, h)| Some(UVec2::new(w.parse().ok()?, h.parse().ok()?)))
                        .filter(|s| s.x >= 64 && s.y >= 64 && s.x <= 8192 && s.y <= 8192);
                    args.size = parsed.ok_or_else(|| {
                        format!(
                            "`--size {v}` is not WIDTHxHEIGHT between 64 and 8192, e.g. 1280x720"
                        )
                    })?;
                }
                "--timeout" => {
                    let v = value("--timeout")?;
                    let secs: f64 = v
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s > 0.0)
                        .ok_or_else(|| {
                            format!("`--timeout {v}` is not a positive number of seconds")
                        })?;
                    args.timeout = Duration::from_secs_f64(secs);
                }
                "-h" | "--help" => args.help = true,
                other if other.starts_with('-') => {
                    return Err(format!("unknown option `{other}`"));
                }
                other => {
                    if photo.replace(PathBuf::from(other)).is_some() {
                        return Err("give at most one photo".into());
                    }
                }
            }
        }
        if let Some(photo) = photo {
            args.photo = photo;
        }
        if args.window && args.screenshot.is_none() {
            return Err("`--window` only makes sense with `--screenshot`".into());
        }
        Ok(args)
    }
}

/// The sample photo, found under the asset root like Bevy's own assets.
fn default_photo() -> PathBuf {
    let under_root = VisageSettings::asset_root().join("assets/photos/astronaut.png");
    if under_root.exists() {
        under_root
    } else {
        PathBuf::from("assets/photos/astronaut.png")
    }
}

/// What the viewer shows.
#[derive(Resource, Default)]
struct Viewer {
    /// The photo of the current request.
    photo: PathBuf,
    /// The entity carrying the avatar request.
    avatar: Option<Entity>,
    /// The 3D camera.
    camera: Option<Entity>,
    /// Rendering into an image rather than a window.
    offscreen: bool,
    /// Size of the window or image in pixels.
    size: UVec2,
    /// The egui texture showing the photo, and the image it was made from.
    photo_texture: Option<(AssetId<Image>, egui::TextureId)>,
}

/// Screenshot and exit settings and state.
#[derive(Resource)]
struct Capture {
    out: Option<PathBuf>,
    exit_after_ready: bool,
    timeout: Duration,
    /// Consecutive frames after the head was ready with no render pipeline waiting.
    settled_frames: u32,
    /// A screenshot has been asked for.
    requested: bool,
}

/// Number of render pipelines still compiling, written by the render world.
#[derive(Resource, Clone, Default)]
struct WaitingPipelines(Arc<AtomicUsize>);

fn count_waiting_pipelines(cache: Res<PipelineCache>, waiting: Res<WaitingPipelines>) {
    waiting
        .0
        .store(cache.waiting_pipelines().count(), Ordering::Relaxed);
}

/// A camera circling a focus point.
#[derive(Component)]
struct OrbitCamera {
    focus: Vec3,
    yaw: f32,
    pitch: f32,
    distance: f32,
}

impl OrbitCamera {
    fn transform(&self) -> Transform {
        let rotation = Quat::from_euler(EulerRot::YXZ, self.yaw, -self.pitch, 0.0);
        let eye = self.focus + rotation * Vec3::new(0.0, 0.0, self.distance);
        Transform::from_translation(eye).looking_at(self.focus, Vec3::Y)
    }
}

fn setup(
    mut commands: Commands,
    mut viewer: ResMut<Viewer>,
    mut images: ResMut<Assets<Image>>,
    mut egui_settings: ResMut<EguiGlobalSettings>,
) {
    // The UI gets a camera of its own, so that the 3D camera's viewport can leave room for it.
    egui_settings.auto_create_primary_context = false;
    let target = if viewer.offscreen {
        let size = viewer.size;
        let mut image =
            Image::new_target_texture(size.x, size.y, TextureFormat::Rgba8UnormSrgb, None);
        image.texture_descriptor.usage |= TextureUsages::COPY_SRC;
        RenderTarget::Image(images.add(image).into())
    } else {
        RenderTarget::default()
    };

    let orbit = OrbitCamera {
        focus: Vec3::ZERO,
        yaw: 0.35,
        pitch: 0.08,
        distance: 0.6,
    };
    let camera = commands
        .spawn((
            Camera3d::default(),
            target.clone(),
            orbit.transform(),
            orbit,
        ))
        .id();
    viewer.camera = Some(camera);
    commands.spawn((
        PrimaryEguiContext,
        Camera2d,
        target,
        RenderLayers::none(),
        Camera {
            order: 1,
            output_mode: CameraOutputMode::Write {
                blend_state: Some(BlendState::ALPHA_BLENDING),
                clear_color: ClearColorConfig::None,
            },
            clear_color: ClearColorConfig::Custom(Color::NONE),
            ..default()
        },
    ));

    // A warm key light from the upper left, a cool fill from the right.
    commands.spawn((
        DirectionalLight {
            illuminance: 6_000.0,
            color: Color::srgb(1.0, 0.97, 0.92),
            ..default()
        },
        Transform::from_xyz(-1.0, 1.2, 1.5).looking_at(Vec3::ZERO, Vec3::Y),
    ));
    commands.spawn((
        DirectionalLight {
            illuminance: 1_800.0,
            color: Color::srgb(0.85, 0.9, 1.0),
            ..default()
        },
        Transform::from_xyz(1.5, 0.3, 0.8).looking_at(Vec3::ZERO, Vec3::Y),
    ));

    let avatar = commands.spawn(AvatarRequest::path(&viewer.photo)).id();
    viewer.avatar = Some(avatar);
}

/// Dropping an image file on the window starts a new request on the same entity, which
/// replaces the current head.
fn start_from_dropped_files(
    mut commands: Commands,
    mut drops: MessageReader<FileDragAndDrop>,
    mut viewer: ResMut<Viewer>,
) {
    for drop in drops.read() {
        if let FileDragAndDrop::DroppedFile { path_buf, .. } = drop
            && let Some(avatar) = viewer.avatar
        {
            info!("new photo: {}", path_buf.display());
            viewer.photo = path_buf.clone();
            commands
                .entity(avatar)
                .insert(AvatarRequest::path(path_buf.clone()));
        }
    }
}

/// Points the camera at a head when it appears.
fn frame_new_head(
    mut ready: MessageReader<AvatarReady>,
    heads: Query<&Mesh3d>,
    meshes: Res<Assets<Mesh>>,
    mut cameras: Query<(&mut OrbitCamera, &Projection)>,
) {
    for r in ready.read() {
        let Some(aabb) = heads
            .get(r.entity)
            .ok()
            .and_then(|m| meshes.get(&m.0))
            .and_then(|m| m.compute_aabb())
        else {
            continue;
        };
        for (mut orbit, projection) in &mut cameras {
            let fov = match projection {
                Projection::Perspective(p) => p.fov,
                _ => std::f32::consts::FRAC_PI_4,
            };
            let radius = Vec3::from(aabb.half_extents).length();
            orbit.focus = aabb.center.into();
            orbit.distance = radius / (fov * 0.5).sin() * 1.05;
        }
    }
}

fn orbit_camera(
    mut cameras: Query<(&mut OrbitCamera, &mut Transform)>,
    buttons: Res<ButtonInput<MouseButton>>,
    motion: Res<AccumulatedMouseMotion>,
    scroll: Res<AccumulatedMouseScroll>,
    egui_input: Option<Res<EguiWantsInput>>,
) {
    let over_ui = egui_input.is_some_and(|e| e.wants_pointer_input() || e.is_pointer_over_area());
    for (mut orbit, mut transform) in &mut cameras {
        if !over_ui {
            if buttons.pressed(MouseButton::Left) && motion.delta != Vec2::ZERO {
                orbit.yaw -= motion.delta.x * 0.008;
                orbit.pitch = (orbit.pitch + motion.delta.y * 0.008).clamp(-1.4, 1.4);
            }
            let lines = match scroll.unit {
                MouseScrollUnit::Line => scroll.delta.y,
                MouseScrollUnit::Pixel => scroll.delta.y / 40.0,
            };
            if lines != 0.0 {
                orbit.distance = (orbit.distance * (-0.12 * lines).exp()).clamp(0.1, 5.0);
            }
        }
        let wanted = orbit.transform();
        if *transform != wanted {
            *transform = wanted;
        }
    }
}

#[allow(clippy::too_many_arguments, reason = "a UI system reads many things")]
fn side_panel(
    mut contexts: EguiContexts,
    mut viewer: ResMut<Viewer>,
    avatars: Query<(&AvatarStatus, Option<&AvatarPhoto>)>,
    images: Res<Assets<Image>>,
    model: Res<VisageModel>,
    mut cameras: Query<&mut Camera, With<OrbitCamera>>,
) -> Result {
    let status = viewer.avatar.and_then(|a| avatars.get(a).ok());

    // Keep one egui texture for the current photo.
    let photo = status.and_then(|(_, p)| p).map(|p| p.0.clone());
    if viewer.photo_texture.map(|(id, _)| id) != photo.as_ref().map(Handle::id) {
        if let Some((old, _)) = viewer.photo_texture.take() {
            contexts.remove_image(old);
        }
        if let Some(handle) = &photo {
            let texture = contexts.add_image(EguiTextureHandle::Weak(handle.id()));
            viewer.photo_texture = Some((handle.id(), texture));
        }
    }
    let photo_size = photo
        .as_ref()
        .and_then(|h| images.get(h))
        .map(|i| egui::vec2(i.width() as f32, i.height() as f32));

    let ctx = contexts.ctx_mut()?;
    let mut root = egui::Ui::new(
        ctx.clone(),
        "root".into(),
        egui::UiBuilder::new()
            .layer_id(egui::LayerId::background())
            .max_rect(ctx.viewport_rect()),
    );
    let panel = egui::Panel::left("visage_panel")
        .exact_size(PANEL_WIDTH)
        .show(&mut root, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                ui.heading("Visage");
                ui.add_space(4.0);
                let name = viewer.photo.file_name().map_or_else(
                    || viewer.photo.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                ui.label(egui::RichText::new(name).strong());
                if let (Some((_, texture)), Some(size)) = (viewer.photo_texture, photo_size) {
                    let width = ui.available_width().min(size.x);
                    let shown = egui::vec2(width, width * size.y / size.x.max(1.0));
                    ui.add(egui::Image::new(egui::load::SizedTexture::new(
                        texture, shown,
                    )));
                }
                ui.add_space(6.0);
                if let Some((status, _)) = status {
                    let stage = if status.is_failed() {
                        format!("failed while {}", status.stage)
                    } else {
                        capitalise(status.stage.label())
                    };
                    ui.label(stage);
                    ui.add(egui::ProgressBar::new(status.fraction).show_percentage());
                    if let Some(error) = &status.error {
                        ui.add_space(4.0);
                        ui.colored_label(egui::Color32::from_rgb(255, 120, 110), error);
                    }
                }
                if !viewer.offscreen {
                    ui.add_space(4.0);
                    ui.small(
                        "Drop an image file here for a new head. Drag to rotate, scroll to zoom.",
                    );
                }
                ui.separator();
                model_info(ui, &model);
            });
        });
    let panel_width = panel.response.rect.width() * ctx.pixels_per_point();

    // The 3D view fills the rest.
    if let Some(camera) = viewer.camera
        && let Ok(mut camera) = cameras.get_mut(camera)
        && let Some(size) = camera.physical_target_size()
    {
        let left = (panel_width.round() as u32).min(size.x.saturating_sub(1));
        let viewport = Viewport {
            physical_position: UVec2::new(left, 0),
            physical_size: UVec2::new(size.x - left, size.y),
            ..default()
        };
        if camera
            .viewport
            .as_ref()
            .map(|v| (v.physical_position, v.physical_size))
            != Some((viewport.physical_position, viewport.physical_size))
        {
            camera.viewport = Some(viewport);
        }
    }
    Ok(())
}

fn model_info(ui: &mut egui::Ui, model: &VisageModel) {
    ui.label(egui::RichText::new("Head model").strong());
    let Some(loaded) = model.get() else {
        ui.label("not loaded yet");
        return;
    };
    let m = &loaded.model;
    let landmarks = [
        m.landmarks68.as_ref().map(|_| "68 (FLAME)".to_string()),
        m.landmarks_mp
            .as_ref()
            .map(|l| format!("{} (MediaPipe)", l.len())),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    let rows = [
        ("name", m.meta.name.clone()),
        ("vertices", m.num_vertices().to_string()),
        ("triangles", m.num_triangles().to_string()),
        ("identity", format!("{} components", m.num_identity())),
        ("expression", format!("{} components", m.num_expression())),
        ("joints", m.num_joints().to_string()),
        (
            "landmarks",
            if landmarks.is_empty() {
                "none".into()
            } else {
                landmarks.join(", ")
            },
        ),
        (
            "UVs",
            m.uv.as_ref().map_or("none".into(), |uv| {
                format!(
                    "{} coordinates ({} mesh vertices)",
                    uv.coords.len(),
                    loaded.layout.num_mesh_vertices()
                )
            }),
        ),
        ("file", short_path(&loaded.path)),
    ];
    egui::Grid::new("model_info")
        .num_columns(2)
        .spacing([8.0, 2.0])
        .show(ui, |ui| {
            for (key, value) in rows {
                ui.label(key);
                ui.add(egui::Label::new(value).wrap());
                ui.end_row();
            }
        });
    ui.add_space(4.0);
    ui.label(egui::RichText::new("Licence").strong());
    ui.label(&m.meta.licence);
}

fn short_path(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Takes the screenshot once the head is ready and the renderer has settled, and exits when
/// asked to.
#[allow(
    clippy::too_many_arguments,
    reason = "the exit logic reads many things"
)]
fn capture_when_ready(
    mut commands: Commands,
    mut capture: ResMut<Capture>,
    viewer: Res<Viewer>,
    avatars: Query<&AvatarStatus>,
    cameras: Query<&RenderTarget, With<OrbitCamera>>,
    waiting: Res<WaitingPipelines>,
    time: Res<Time<Real>>,
    mut exit: MessageWriter<AppExit>,
) {
    if capture.out.is_none() && !capture.exit_after_ready {
        return;
    }
    let Some(status) = viewer.avatar.and_then(|a| avatars.get(a).ok()) else {
        return;
    };
    if capture.exit_after_ready {
        if let Some(error) = &status.error {
            error!("the avatar failed: {error}");
            exit.write(AppExit::error());
            return;
        }
        if time.elapsed() > capture.timeout {
            error!(
                "timed out after {:.0} s (stage: {})",
                capture.timeout.as_secs_f64(),
                status.stage
            );
            exit.write(AppExit::error());
            return;
        }
    }
    if !status.is_ready() || capture.requested {
        return;
    }
    let Some(out) = capture.out.clone() else {
        exit.write(AppExit::Success);
        return;
    };
    if waiting.0.load(Ordering::Relaxed) == 0 {
        capture.settled_frames += 1;
    } else {
        capture.settled_frames = 0;
    }
    if capture.settled_frames < SETTLE_FRAMES {
        return;
    }
    capture.requested = true;
    let screenshot = match cameras.iter().next() {
        Some(RenderTarget::Image(target)) => Screenshot::image(target.handle.clone()),
        _ => Screenshot::primary_window(),
    };
    let exit_after = capture.exit_after_ready;
    commands.spawn(screenshot).observe(
        move |captured: On<ScreenshotCaptured>, mut exit: MessageWriter<AppExit>| match save_png(
            &captured.image,
            &out,
        ) {
            Ok(()) => {
                info!("wrote {}", out.display());
                if exit_after {
                    exit.write(AppExit::Success);
                }
            }
            Err(message) => {
                error!("{message}");
                exit.write(AppExit::error());
            }
        },
    );
}

/// Writes `image` as an RGB PNG at `out`, atomically (a temporary file renamed into place).
fn save_png(image: &Image, out: &Path) -> Result<(), String> {
    let rgb = image
        .clone()
        .try_into_dynamic()
        .map_err(|e| format!("could not convert the screenshot: {e}"))?
        .to_rgb8();
    let file_name = out
        .file_name()
        .ok_or_else(|| format!("`{}` is not a file path", out.display()))?;
    let tmp = out.with_file_name(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let written = rgb
        .save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| format!("could not write `{}`: {e}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, out)
                .map_err(|e| format!("could not move the screenshot to `{}`: {e}", out.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
