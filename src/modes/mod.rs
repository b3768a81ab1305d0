//! The binary's other modes: `shardis dev` (a local fleet for trying the proxy) and
//! `--from-twemproxy` (a nutcracker YAML file converted to shardis' TOML).

pub mod dev;
pub mod twemproxy;
