//! Realtime: which sockets watch what ([`hub`]).

pub mod hub;
