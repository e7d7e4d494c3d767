//! `wbs eval`: the evaluation protocol of `protocol.md` over whole datasets.
//!
//! ```text
//! datasets (layout → pairs) ─▶ run (match_pair per pair and method, journal) ─▶ report ─▶ plot
//!                                                   shards ─▶ merge ──────────▶ report ─▶ plot
//! ```
//! Every pair is matched by [`run::match_pair_reusing`], which runs the method's [`Matcher`](crate::Matcher)
//! and `protocol::judge` exactly as `wbs match --ground-truth` does: there is one implementation
//! of the protocol. An image named by several pairs is extracted once per method
//! ([`reuse`]). The records (one per pair and method) are appended to a journal as they finish,
//! and every report is a pure function of the settings and the records, so a resumed run or a
//! merge of shards reports exactly what one uninterrupted run would.

pub mod datasets;
pub mod merge;
pub mod method;
#[cfg(feature = "plots")]
pub mod plot;
pub mod record;
pub mod report;
pub mod reuse;
pub mod run;

pub use datasets::{load_dataset, load_pair_list, Dataset, Layout, Pair, TruthSource};
pub use method::MethodConfig;
pub use record::{EvalFile, PairRecord, Settings, Shard};
pub use run::{match_pair, match_pair_reusing, run, run_with, Plan, Progress, Quiet, RunOptions};
