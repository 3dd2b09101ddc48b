//! quiesce-sim: runs the production gateway core in seeded, randomized worlds on virtual time
//! and proves the invariants of SPEC section 6 on every event.

pub mod driver;
pub mod explore;
pub mod find_time;
pub mod generate;
pub mod log;
pub mod oracle;
pub mod plan;
pub mod scenario;
pub mod shrink;
pub mod timeline;
