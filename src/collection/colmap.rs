//! COLMAP's SQLite database, written the way COLMAP (4.x, also read by 3.12+) reads it.
//!
//! The schema is COLMAP's own (`CREATE TABLE` statements as `colmap::Database` creates them in
//! pycolmap 4.2.1), so COLMAP opens a database wbs made and wbs can add to one COLMAP made. What
//! wbs writes, per table:
//!
//! - `cameras`: `SIMPLE_RADIAL` cameras (model 2), params `[f, w/2, h/2, 0]`, one per image or
//!   shared (see [`super::camera`]), `f` the EXIF focal prior with `prior_focal_length = 1`, or
//!   COLMAP's default `f = 1.2·max(w, h)` with `prior_focal_length = 0`.
//! - `rigs`, `frames`, `frame_data`: the trivial rig of each camera and one frame per image, as
//!   COLMAP's feature extractor writes them (rig `ref_sensor_id` = the camera, sensor type 0).
//! - `images`: `image_id`, `name` (relative to the image folder, `/`-separated), `camera_id`.
//! - `keypoints`: `rows × 6` float32 `x, y, a11, a12, a21, a22` per feature, row-major. COLMAP puts
//!   the centre of the top-left pixel at (0.5, 0.5), wbs at (0, 0): `x = c.x + 0.5`,
//!   `y = c.y + 0.5`. The 2×2 shape is the frame's `A` divided by mrSize (3√3), so that
//!   `sqrt(|det|)` is the detector scale σ, as for COLMAP's SIFT keypoints; the ellipse it spans
//!   is the region's, its orientation unchanged.
//! - `descriptors`: `rows × 128` uint8, type 0 (SIFT). wbs's descriptors are unit-length rows; the
//!   SIFT family (SIFT, RootSIFT) is quantised as COLMAP quantises its own RootSIFT,
//!   `min(255, round(512·d))`; HalfRootSIFT (64-D) the same, padded with 64 zeros; HardNet (signed)
//!   as `clamp(round(128 + 256·d), 0, 255)`. These matter only if COLMAP matches the descriptors
//!   again; the matches wbs writes do not depend on them.
//! - `matches`: the tentatives, `rows × 2` uint32 feature indices, and `two_view_geometries`: the
//!   inliers the same way, `config` 3 (uncalibrated, with `F`) or 6 (planar or panoramic, with
//!   `H`) for a registered pair, 1 (degenerate, no rows) for a pair that was not; `F`/`H` as nine
//!   float64 row-major, converted to COLMAP's pixel convention. Both keyed by
//!   `pair_id = i·2147483647 + j` with image ids `i < j`; a pair written the other way round has its
//!   index columns swapped and its model transposed (F) or inverted (H).
//! - `wbs_settings`: one table of wbs's own (COLMAP ignores it) with the settings the features
//!   and matches were made with, so that a resumed or merged run cannot mix settings, and the
//!   sharing key of each camera wbs wrote (`camera:KEY` → camera id), so that `--add` finds it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::describe::{Described, DescriptorKind};
use crate::geometry::Geometry;
use crate::laf::{Laf, MR_SIZE};
use crate::{Error, Result};

/// COLMAP's bound on image ids; pair ids are `i·MAX_IMAGE_ID + j`.
pub const MAX_IMAGE_ID: u64 = 2_147_483_647;
/// COLMAP's camera model id of `SIMPLE_RADIAL` (f, cx, cy, k).
pub const SIMPLE_RADIAL: i64 = 2;
/// COLMAP's `TwoViewGeometry::ConfigurationType` values wbs writes.
pub mod config {
    /// Verification found no model with enough inliers.
    pub const DEGENERATE: i64 = 1;
    /// A fundamental matrix (the intrinsics are not known).
    pub const UNCALIBRATED: i64 = 3;
    /// A homography: a plane, or a camera turning about its centre.
    pub const PLANAR_OR_PANORAMIC: i64 = 6;
}
/// The descriptor length COLMAP expects.
pub const DESCRIPTOR_BYTES: usize = 128;

/// COLMAP's tables, as COLMAP creates them, and wbs's settings table.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rigs   (rig_id               INTEGER  PRIMARY KEY AUTOINCREMENT  NOT NULL,    ref_sensor_id        INTEGER                             NOT NULL,    ref_sensor_type      INTEGER                             NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS rig_ref_sensor_assignment ON    rigs(ref_sensor_id, ref_sensor_type);
CREATE TABLE IF NOT EXISTS rig_sensors   (rig_id               INTEGER                             NOT NULL,    sensor_id            INTEGER                             NOT NULL,    sensor_type          INTEGER                             NOT NULL,    sensor_from_rig      BLOB,FOREIGN KEY(rig_id) REFERENCES rigs(rig_id) ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS rig_sensor_assignment ON    rig_sensors(sensor_id, sensor_type);
CREATE TABLE IF NOT EXISTS cameras   (camera_id            INTEGER  PRIMARY KEY AUTOINCREMENT  NOT NULL,    model                INTEGER                             NOT NULL,    width                INTEGER                             NOT NULL,    height               INTEGER                             NOT NULL,    params               BLOB,    prior_focal_length   INTEGER                             NOT NULL);
CREATE TABLE IF NOT EXISTS frames   (frame_id             INTEGER  PRIMARY KEY AUTOINCREMENT  NOT NULL,    rig_id               INTEGER                             NOT NULL,    FOREIGN KEY(rig_id) REFERENCES rigs(rig_id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS frame_data   (frame_id             INTEGER                             NOT NULL,    data_id              INTEGER                             NOT NULL,    sensor_id            INTEGER                             NOT NULL,    sensor_type          INTEGER                             NOT NULL,    FOREIGN KEY(frame_id) REFERENCES frames(frame_id) ON DELETE CASCADE);
CREATE UNIQUE INDEX IF NOT EXISTS frame_sensor_assignment ON    frame_data(data_id, sensor_type);
CREATE TABLE IF NOT EXISTS images   (image_id   INTEGER  PRIMARY KEY AUTOINCREMENT  NOT NULL,    name       TEXT                                NOT NULL UNIQUE,    camera_id  INTEGER                             NOT NULL,    CONSTRAINT image_id_check CHECK(image_id >= 0 and image_id < 2147483647),    FOREIGN KEY(camera_id) REFERENCES cameras(camera_id));
CREATE UNIQUE INDEX IF NOT EXISTS index_name ON images(name);
CREATE TABLE IF NOT EXISTS pose_priors   (pose_prior_id              INTEGER  PRIMARY KEY  NOT NULL,    corr_data_id               INTEGER               NOT NULL,    corr_sensor_id             INTEGER               NOT NULL,    corr_sensor_type           INTEGER               NOT NULL,    position                   BLOB,    position_covariance        BLOB,    gravity                    BLOB,    coordinate_system          INTEGER               NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS pose_prior_data_assignment ON    pose_priors(corr_data_id, corr_sensor_id, corr_sensor_type);
CREATE TABLE IF NOT EXISTS keypoints   (image_id  INTEGER  PRIMARY KEY  NOT NULL,    rows      INTEGER               NOT NULL,    cols      INTEGER               NOT NULL,    data      BLOB,    FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS descriptors   (image_id      INTEGER  PRIMARY KEY  NOT NULL,    type          INTEGER               NOT NULL,    rows          INTEGER               NOT NULL,    cols          INTEGER               NOT NULL,    data          BLOB,    FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS matches   (pair_id  INTEGER  PRIMARY KEY  NOT NULL,    rows     INTEGER               NOT NULL,    cols     INTEGER               NOT NULL,    data     BLOB);
CREATE TABLE IF NOT EXISTS two_view_geometries   (pair_id  INTEGER  PRIMARY KEY  NOT NULL,    rows     INTEGER               NOT NULL,    cols     INTEGER               NOT NULL,    data     BLOB,    config   INTEGER               NOT NULL,    F        BLOB,    E        BLOB,    H        BLOB,    qvec     BLOB,    tvec     BLOB,    camera1  BLOB,    camera2  BLOB);
CREATE TABLE IF NOT EXISTS wbs_settings (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
";

/// COLMAP's tables that hold rows wbs writes, in an order that keeps references valid.
pub const TABLES: [&str; 9] = [
    "cameras",
    "rigs",
    "frames",
    "frame_data",
    "images",
    "keypoints",
    "descriptors",
    "matches",
    "two_view_geometries",
];

/// The pair id of images `a` and `b` (either order), as COLMAP computes it.
pub fn pair_id(a: u32, b: u32) -> u64 {
    let (i, j) = if a < b { (a, b) } else { (b, a) };
    i as u64 * MAX_IMAGE_ID + j as u64
}

/// The two image ids (smaller first) of a pair id.
pub fn pair_images(pair_id: u64) -> (u32, u32) {
    (
        (pair_id / MAX_IMAGE_ID) as u32,
        (pair_id % MAX_IMAGE_ID) as u32,
    )
}

/// One keypoint row in COLMAP's convention (see the [module documentation](self)).
pub fn keypoint_row(laf: &Laf) -> [f32; 6] {
    let a = laf.a;
    [
        laf.c[0] + 0.5,
        laf.c[1] + 0.5,
        a[0][0] / MR_SIZE,
        a[0][1] / MR_SIZE,
        a[1][0] / MR_SIZE,
        a[1][1] / MR_SIZE,
    ]
}

/// One descriptor as COLMAP's 128 bytes (see the [module documentation](self)).
pub fn quantise(descriptor: &[f32], kind: DescriptorKind) -> [u8; DESCRIPTOR_BYTES] {
    let mut out = [0u8; DESCRIPTOR_BYTES];
    for (o, &d) in out.iter_mut().zip(descriptor) {
        let v = match kind {
            DescriptorKind::Hardnet => 128.0 + 256.0 * d,
            _ => 512.0 * d,
        };
        *o = v.round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// `T` with `p_wbs = T·p_colmap` (COLMAP's pixel centres are wbs's plus one half).
const TO_WBS: [[f64; 3]; 3] = [[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]];
const TO_COLMAP: [[f64; 3]; 3] = [[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]];

fn mul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    m
}

fn transpose(a: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = a[c][r];
        }
    }
    m
}

/// A model estimated in wbs's pixel convention, in COLMAP's: `Tᵀ·F·T` for a fundamental matrix,
/// `T⁻¹·H·T` for a homography (`T` shifts COLMAP's pixel centres to wbs's).
pub fn model_to_colmap(kind: Geometry, model: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    match kind {
        Geometry::Fundamental => mul(&mul(&transpose(&TO_WBS), model), &TO_WBS),
        Geometry::Homography => mul(&mul(&TO_COLMAP, model), &TO_WBS),
    }
}

/// The matched pair `(a, b)` of a collection, in wbs's terms; [`Database::write_pairs`] stores
/// it in COLMAP's.
#[derive(Clone, Debug, PartialEq)]
pub struct PairMatches {
    /// Image ids of the first and the second image.
    pub images: (u32, u32),
    /// Tentative correspondences: feature index in the first image, in the second.
    pub tentatives: Vec<[u32; 2]>,
    /// The verified subset (empty when the pair is not registered).
    pub inliers: Vec<[u32; 2]>,
    /// The verified model, image 1 → image 2, in wbs's pixel convention (`None` when not
    /// registered).
    pub model: Option<[[f64; 3]; 3]>,
    /// The kind of model.
    pub geometry: Geometry,
}

/// One image's rows (frame, frame data, image): what [`Database::add_image`] writes.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageEntry {
    /// The image id to use.
    pub id: u32,
    /// The name, relative to the image folder, `/`-separated.
    pub name: String,
    /// Its camera (written before by [`Database::add_camera`]).
    pub camera: u32,
}

/// One camera row and its rig: what [`Database::add_camera`] writes.
#[derive(Clone, Debug, PartialEq)]
pub struct CameraEntry {
    /// The camera id to use.
    pub id: u32,
    /// The sharing key (see [`super::camera::CameraSpec::identity`]).
    pub identity: String,
    /// Width and height in pixels, as stored (COLMAP ignores the EXIF orientation).
    pub size: [usize; 2],
    /// The focal length, pixels.
    pub focal: f64,
    /// `true` when `focal` is a prior from EXIF (`prior_focal_length = 1`).
    pub prior: bool,
}

/// The prefix of the camera keys in `wbs_settings`.
const CAMERA_KEY: &str = "camera:";

/// An open COLMAP database.
pub struct Database {
    conn: Connection,
    path: PathBuf,
}

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::invalid(format!("{}: COLMAP database: {e}", path.display()))
}

fn blob<T: Copy>(values: &[T], to_bytes: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    values.iter().flat_map(|&v| to_bytes(v)).collect()
}

fn matrix_blob(m: &[[f64; 3]; 3]) -> Vec<u8> {
    blob(m.as_flattened(), |v: f64| v.to_le_bytes().to_vec())
}

fn index_blob(pairs: &[[u32; 2]]) -> Vec<u8> {
    blob(pairs.as_flattened(), |v: u32| v.to_le_bytes().to_vec())
}

impl Database {
    /// Opens `path`, creating the file and COLMAP's tables where missing.
    pub fn open(path: &Path) -> Result<Database> {
        let conn = Connection::open(path).map_err(|e| sql_error(path, e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| sql_error(path, e))
            .map_err(|e| {
                Error::invalid(format!(
                    "{e} (is it a COLMAP database, and is its folder writable?)"
                ))
            })?;
        Ok(Database {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        sql_error(&self.path, e)
    }

    /// Every image listed: name → image id.
    pub fn images(&self) -> Result<BTreeMap<String, u32>> {
        self.two_columns("SELECT name, image_id FROM images")
    }

    /// The rows of a query of two columns.
    fn two_columns<A, B, C>(&self, sql: &str) -> Result<C>
    where
        A: rusqlite::types::FromSql,
        B: rusqlite::types::FromSql,
        C: FromIterator<(A, B)>,
    {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, A>(0)?, r.get::<_, B>(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Runs `statements` (SQL with its parameters) in one transaction.
    fn transaction(&mut self, statements: &[(&str, &[&dyn rusqlite::ToSql])]) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        for (sql, p) in statements {
            tx.execute(sql, *p).map_err(|e| sql_error(&path, e))?;
        }
        tx.commit().map_err(|e| sql_error(&path, e))
    }

    /// The ids of the images that have keypoints.
    pub fn images_with_keypoints(&self) -> Result<BTreeSet<u32>> {
        self.ids("SELECT image_id FROM keypoints")
    }

    /// The pair ids that have a two-view geometry (verified, registered or not).
    pub fn verified_pairs(&self) -> Result<BTreeSet<u64>> {
        let ids: BTreeSet<i64> = self.ids("SELECT pair_id FROM two_view_geometries")?;
        Ok(ids.into_iter().map(|id| id as u64).collect())
    }

    fn ids<T: rusqlite::types::FromSql + Ord>(&self, sql: &str) -> Result<BTreeSet<T>> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, T>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// A value of wbs's settings table.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT value FROM wbs_settings WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Sets a value of wbs's settings table.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO wbs_settings (key, value) VALUES (?1, ?2)",
                params![key, value],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// An id not yet used in `table`'s `column`: `wanted` when free, else one past the largest.
    fn free_id(&self, table: &str, column: &str, wanted: u32) -> Result<u32> {
        let taken: bool = self
            .conn
            .query_row(
                &format!("SELECT EXISTS(SELECT 1 FROM {table} WHERE {column} = ?1)"),
                [wanted],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if !taken {
            return Ok(wanted);
        }
        self.conn
            .query_row(
                &format!("SELECT COALESCE(MAX({column}), 0) + 1 FROM {table}"),
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// The cameras wbs wrote: sharing key → camera id.
    pub fn camera_keys(&self) -> Result<BTreeMap<String, u32>> {
        let rows: Vec<(String, String)> =
            self.two_columns("SELECT key, value FROM wbs_settings WHERE key LIKE 'camera:%'")?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, value)| {
                Some((
                    key.strip_prefix(CAMERA_KEY)?.to_string(),
                    value.parse().ok()?,
                ))
            })
            .collect())
    }

    /// Every camera id in the database.
    pub fn camera_ids(&self) -> Result<BTreeSet<u32>> {
        self.ids("SELECT camera_id FROM cameras")
    }

    /// Writes a camera (`SIMPLE_RADIAL`, `[f, w/2, h/2, 0]`), its rig (id equal to the camera's
    /// where free) and its sharing key, in one transaction.
    pub fn add_camera(&mut self, camera: &CameraEntry) -> Result<()> {
        let rig = self.free_id("rigs", "rig_id", camera.id)?;
        let [w, h] = camera.size;
        let params = blob(
            &[camera.focal, w as f64 / 2.0, h as f64 / 2.0, 0.0],
            |v: f64| v.to_le_bytes().to_vec(),
        );
        let key = format!("{CAMERA_KEY}{}", camera.identity);
        self.transaction(&[
            (
                "INSERT INTO cameras (camera_id, model, width, height, params, prior_focal_length) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    camera.id,
                    SIMPLE_RADIAL,
                    w as i64,
                    h as i64,
                    params,
                    camera.prior as i64
                ],
            ),
            (
                "INSERT INTO rigs (rig_id, ref_sensor_id, ref_sensor_type) VALUES (?1, ?2, 0)",
                params![rig, camera.id],
            ),
            (
                "INSERT OR REPLACE INTO wbs_settings (key, value) VALUES (?1, ?2)",
                params![key, camera.id.to_string()],
            ),
        ])
    }

    /// Writes an image of a camera already written, with its frame (id equal to the image id
    /// where free) in the camera's rig, in one transaction.
    pub fn add_image(&mut self, entry: &ImageEntry) -> Result<()> {
        let frame = self.free_id("frames", "frame_id", entry.id)?;
        let rig: u32 = self
            .conn
            .query_row(
                "SELECT rig_id FROM rigs WHERE ref_sensor_id = ?1 AND ref_sensor_type = 0",
                [entry.camera],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        self.transaction(&[
            (
                "INSERT INTO frames (frame_id, rig_id) VALUES (?1, ?2)",
                params![frame, rig],
            ),
            (
                "INSERT INTO frame_data (frame_id, data_id, sensor_id, sensor_type) \
                 VALUES (?1, ?2, ?3, 0)",
                params![frame, entry.id, entry.camera],
            ),
            (
                "INSERT INTO images (image_id, name, camera_id) VALUES (?1, ?2, ?3)",
                params![entry.id, entry.name, entry.camera],
            ),
        ])
    }

    /// Writes the keypoints and descriptors of image `id`, in one transaction.
    pub fn write_features(
        &mut self,
        id: u32,
        features: &Described,
        kind: DescriptorKind,
    ) -> Result<()> {
        let keypoints: Vec<u8> = features
            .features
            .iter()
            .flat_map(|f| keypoint_row(&f.laf))
            .flat_map(f32::to_le_bytes)
            .collect();
        let descriptors: Vec<u8> = (0..features.len())
            .flat_map(|i| quantise(features.descriptor(i), kind))
            .collect();
        let n = features.len() as i64;
        self.transaction(&[
            (
                "INSERT OR REPLACE INTO keypoints (image_id, rows, cols, data) \
                 VALUES (?1, ?2, 6, ?3)",
                params![id, n, keypoints],
            ),
            (
                "INSERT OR REPLACE INTO descriptors (image_id, type, rows, cols, data) \
                 VALUES (?1, 0, ?2, ?3, ?4)",
                params![id, n, DESCRIPTOR_BYTES as i64, descriptors],
            ),
        ])
    }

    /// Writes matched pairs (`matches` and `two_view_geometries`, replacing rows of the same pair)
    /// in one transaction: a run cut short keeps every batch it finished.
    pub fn write_pairs(&mut self, pairs: &[PairMatches]) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        for pair in pairs {
            let (a, b) = pair.images;
            let swapped = a > b;
            let orient = |m: &[[u32; 2]]| -> Vec<[u32; 2]> {
                m.iter()
                    .map(|&[x, y]| if swapped { [y, x] } else { [x, y] })
                    .collect()
            };
            let model = match (pair.model, swapped) {
                (None, _) => None,
                (Some(m), false) => Some(m),
                (Some(m), true) => Some(match pair.geometry {
                    Geometry::Fundamental => transpose(&m),
                    Geometry::Homography => invert(&m).ok_or_else(|| {
                        Error::invalid(format!("pair {a}-{b}: a singular homography"))
                    })?,
                }),
            };
            let model = model.map(|m| model_to_colmap(pair.geometry, &m));
            let id = pair_id(a, b) as i64;
            let tentatives = orient(&pair.tentatives);
            let (inliers, config) = match model {
                Some(_) => (
                    orient(&pair.inliers),
                    match pair.geometry {
                        Geometry::Fundamental => config::UNCALIBRATED,
                        Geometry::Homography => config::PLANAR_OR_PANORAMIC,
                    },
                ),
                None => (Vec::new(), config::DEGENERATE),
            };
            let (f, h) = match (model, pair.geometry) {
                (Some(m), Geometry::Fundamental) => (Some(matrix_blob(&m)), None),
                (Some(m), Geometry::Homography) => (None, Some(matrix_blob(&m))),
                (None, _) => (None, None),
            };
            tx.execute(
                "INSERT OR REPLACE INTO matches (pair_id, rows, cols, data) VALUES (?1, ?2, 2, ?3)",
                params![id, tentatives.len() as i64, index_blob(&tentatives)],
            )
            .map_err(|e| sql_error(&path, e))?;
            tx.execute(
                "INSERT OR REPLACE INTO two_view_geometries \
                 (pair_id, rows, cols, data, config, F, E, H, qvec, tvec, camera1, camera2) \
                 VALUES (?1, ?2, 2, ?3, ?4, ?5, NULL, ?6, NULL, NULL, NULL, NULL)",
                params![id, inliers.len() as i64, index_blob(&inliers), config, f, h],
            )
            .map_err(|e| sql_error(&path, e))?;
        }
        tx.commit().map_err(|e| sql_error(&path, e))
    }

    /// Copies into this database every row of `other` (a shard of the same collection) that it
    /// lacks. Images must agree: a name with another id, or an id with another name, is an error.
    pub fn merge_from(&mut self, other: &Path) -> Result<()> {
        let theirs = Database::open(other)?;
        let ours = self.images()?;
        let ours_by_id: BTreeMap<u32, &String> = ours.iter().map(|(n, &i)| (i, n)).collect();
        for (name, id) in theirs.images()? {
            let clash = match (ours.get(&name), ours_by_id.get(&id)) {
                (Some(&i), _) if i != id => true,
                (None, Some(_)) => true,
                _ => false,
            };
            if clash {
                return Err(Error::invalid(format!(
                    "{}: image {name} (id {id}) is listed differently in {}: not shards of one \
                     collection",
                    other.display(),
                    self.path.display()
                )));
            }
        }
        for key in ["settings", "camera_mode"] {
            match (self.setting(key)?, theirs.setting(key)?) {
                (Some(a), Some(b)) if a != b => {
                    return Err(Error::invalid(format!(
                        "{} was made with other settings than {} ({key}): not shards of one run",
                        other.display(),
                        self.path.display()
                    )))
                }
                (None, Some(b)) => self.set_setting(key, &b)?,
                _ => {}
            }
        }
        drop(theirs);
        let path = self.path.clone();
        let other_name = other.to_string_lossy().into_owned();
        self.conn
            .execute("ATTACH DATABASE ?1 AS shard", [other_name])
            .map_err(|e| sql_error(&path, e))?;
        let copied = (|| {
            let tx = self.conn.transaction()?;
            for table in TABLES.iter().chain(&["wbs_settings"]) {
                tx.execute(
                    &format!("INSERT OR IGNORE INTO main.{table} SELECT * FROM shard.{table}"),
                    [],
                )?;
            }
            tx.commit()
        })();
        let detached = self.conn.execute("DETACH DATABASE shard", []);
        copied.map_err(|e| sql_error(&path, e))?;
        detached.map(|_| ()).map_err(|e| sql_error(&path, e))
    }

    /// Every row of `table`, each as its columns' values in SQLite's text rendering (blobs as
    /// hex), sorted: for comparing two databases.
    pub fn dump(&self, table: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT * FROM {table}"))
            .map_err(|e| self.err(e))?;
        let columns = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut fields = Vec::with_capacity(columns);
                for c in 0..columns {
                    use rusqlite::types::ValueRef;
                    fields.push(match r.get_ref(c)? {
                        ValueRef::Null => "NULL".to_string(),
                        ValueRef::Integer(i) => i.to_string(),
                        ValueRef::Real(f) => format!("{f:e}"),
                        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        ValueRef::Blob(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
                    });
                }
                Ok(fields.join("|"))
            })
            .map_err(|e| self.err(e))?;
        let mut rows: Vec<String> = rows
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))?;
        rows.sort();
        Ok(rows)
    }
}

fn invert(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let n = nalgebra::Matrix3::from_fn(|r, c| m[r][c]).try_inverse()?;
    Some(std::array::from_fn(|r| std::array::from_fn(|c| n[(r, c)])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_ids_are_colmaps() {
        assert_eq!(pair_id(1, 2), 2_147_483_649); // as COLMAP wrote for images 1 and 2
        assert_eq!(pair_id(2, 1), pair_id(1, 2));
        assert_eq!(pair_images(pair_id(7, 3)), (3, 7));
    }

    #[test]
    fn keypoints_move_by_half_a_pixel_and_keep_the_scale() {
        let laf = Laf {
            a: [[2.0 * MR_SIZE, 0.0], [0.0, 2.0 * MR_SIZE]],
            c: [0.0, 10.0],
        };
        let row = keypoint_row(&laf);
        assert_eq!(&row[..2], &[0.5, 10.5]);
        let scale = (row[2] * row[5] - row[3] * row[4]).abs().sqrt();
        assert!((scale - 2.0).abs() < 1e-5, "{scale}");
    }

    #[test]
    fn descriptors_quantise_like_colmap() {
        let mut d = vec![0.0f32; 128];
        d[0] = 0.1;
        d[1] = 0.9;
        d[2] = 0.25;
        let q = quantise(&d, DescriptorKind::Rootsift);
        assert_eq!(&q[..4], &[51, 255, 128, 0]);
        let h = quantise(&[-0.5, 0.0, 0.25], DescriptorKind::Hardnet);
        assert_eq!(&h[..3], &[0, 128, 192]);
        assert_eq!(&h[3..], &[0; 125]); // a shorter descriptor is padded with zeros
    }

    /// The models hold for the same correspondences in COLMAP's coordinates.
    #[test]
    fn models_follow_the_pixel_convention() {
        let apply = |m: &[[f64; 3]; 3], p: [f64; 2]| {
            let v: Vec<f64> = (0..3)
                .map(|r| m[r][0] * p[0] + m[r][1] * p[1] + m[r][2])
                .collect();
            v
        };
        let h = [[1.1, 0.1, 5.0], [-0.05, 0.9, -3.0], [1e-4, 2e-4, 1.0]];
        let p = [40.0, 70.0];
        let q = apply(&h, p);
        let q = [q[0] / q[2], q[1] / q[2]];
        let hc = model_to_colmap(Geometry::Homography, &h);
        let qc = apply(&hc, [p[0] + 0.5, p[1] + 0.5]);
        assert!((qc[0] / qc[2] - (q[0] + 0.5)).abs() < 1e-9);
        assert!((qc[1] / qc[2] - (q[1] + 0.5)).abs() < 1e-9);

        // F with x2ᵀ·F·x1 = 0 for a pure horizontal translation: F = [t]ₓ with t = (1, 0, 0).
        let f = [[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]];
        let (x1, x2) = ([10.0, 20.0], [35.0, 20.0]);
        let fc = model_to_colmap(Geometry::Fundamental, &f);
        let l = apply(&fc, [x1[0] + 0.5, x1[1] + 0.5]);
        let e = l[0] * (x2[0] + 0.5) + l[1] * (x2[1] + 0.5) + l[2];
        assert!(e.abs() < 1e-9, "{e}");
    }
}
