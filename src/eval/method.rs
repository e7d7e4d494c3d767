//! A method of an evaluation: one row of the table, and the matcher settings it runs with.
//!
//! The protocol fixes the verification model per pair (homography ground truth → homography,
//! annotated correspondences → fundamental matrix), so a method carries a complete
//! [`Config`] for each model, made once from the command line. Nothing is re-derived per pair.

use serde::{Deserialize, Serialize};

use crate::device::DeviceKind;
use crate::geometry::Geometry;
use crate::matcher::Matcher;
use crate::pipeline::Config;
use crate::protocol::GroundTruth;
use crate::Result;

/// A method's settings for every pair it will see.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodConfig {
    /// The row label: the preset's name (`hesaff`), with the descriptor when it is not RootSIFT.
    pub label: String,
    /// Where the networks and matching run ("cpu" or "cuda").
    pub device: DeviceKind,
    /// Settings for pairs verified with a homography.
    pub homography: Config,
    /// Settings for pairs verified with a fundamental matrix.
    pub fundamental: Config,
    /// The model for pairs without ground truth (`--geometry`).
    pub without_ground_truth: Geometry,
}

impl MethodConfig {
    /// A method from one configuration: kept as it is for the model it verifies, and with the
    /// protocol's defaults of the other model (`Config::set_geometry`) for the other pairs.
    pub fn from_config(config: Config, device: DeviceKind) -> MethodConfig {
        let with = |kind: Geometry| {
            let mut c = config.clone();
            if c.ransac.kind != kind {
                c.set_geometry(kind);
            }
            c
        };
        MethodConfig {
            label: Self::label_of(&config),
            device,
            homography: with(Geometry::Homography),
            fundamental: with(Geometry::Fundamental),
            without_ground_truth: Geometry::Homography,
        }
    }

    /// A preset with the protocol's defaults, on the CPU.
    pub fn preset(method: crate::pipeline::Method) -> MethodConfig {
        let mut config = Config::preset(method);
        config.device = crate::device::Device::Cpu;
        Self::from_config(config, DeviceKind::Cpu)
    }

    /// The model that verifies a pair with this ground truth.
    pub fn geometry_for(&self, truth: &GroundTruth) -> Geometry {
        match truth {
            GroundTruth::Homography(_) => Geometry::Homography,
            GroundTruth::Correspondences(_) => Geometry::Fundamental,
            GroundTruth::None => self.without_ground_truth,
        }
    }

    /// The settings for one verification model.
    pub fn config(&self, kind: Geometry) -> &Config {
        match kind {
            Geometry::Homography => &self.homography,
            Geometry::Fundamental => &self.fundamental,
        }
    }

    /// The method's matchers, one per verification model: the networks are loaded once and
    /// shared by both.
    pub fn matchers(&self) -> Result<MethodMatchers> {
        let homography = Matcher::new(self.homography.clone())?;
        let models = homography.models().clone();
        Ok(MethodMatchers {
            fundamental: Matcher::with_models(self.fundamental.clone(), models)?,
            homography,
        })
    }

    /// The label of a configuration: the method's name, plus the descriptor unless it is the
    /// presets' RootSIFT (`hesaff+halfrootsift`).
    pub fn label_of(config: &Config) -> String {
        let descriptor = serde_json::to_value(config.descriptor)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if config.descriptor == crate::describe::DescriptorKind::Rootsift {
            config.method.name().to_string()
        } else {
            format!("{}+{descriptor}", config.method.name())
        }
    }
}

/// A method's [`Matcher`]s, made once per evaluation ([`MethodConfig::matchers`]).
pub struct MethodMatchers {
    homography: Matcher,
    fundamental: Matcher,
}

impl MethodMatchers {
    /// The matcher for one verification model.
    pub fn for_geometry(&self, kind: Geometry) -> &Matcher {
        match kind {
            Geometry::Homography => &self.homography,
            Geometry::Fundamental => &self.fundamental,
        }
    }
}
