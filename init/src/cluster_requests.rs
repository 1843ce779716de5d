//! The cluster calls of the API: the roll-out state in etcd, read and set
//! through this machine. Each is answered from a thread of its own (etcd
//! and the bundle's server may be slow), never from the loop.

use bascule_api::pb;
use bascule_api::pb::request::Call;

use crate::event_loop::Init;

impl Init {
    pub(crate) fn cluster_call(&mut self, tok: u64, id: u64, call: Call) {
        let Some(cfg) = crate::cluster_boot::machine() else {
            self.reply(
                tok,
                id,
                Err((
                    pb::ErrorCode::Unavailable,
                    format!(
                        "this machine is not in a cluster: it has no machine configuration at {}",
                        crate::cluster_boot::MACHINE_CONFIG
                    ),
                )),
            );
            return;
        };
        let cfg = cfg.clone();
        let job = move || crate::cluster_calls::answer(&cfg, call);
        if let Err(busy) = self.deferred.spawn(tok, id, job) {
            self.reply(tok, id, Err((pb::ErrorCode::Unavailable, busy)));
        }
    }
}
