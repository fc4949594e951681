//! Admin request validation: the bytes decoded with prost as the request the first byte
//! picks, then judged as the admin service judges it on a fixed replica
//! (`node::admin::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use node::admin::fuzzing::Replica;
use prost::Message;
use proto::admin::v1 as pb;
use std::sync::OnceLock;

static REPLICA: OnceLock<Replica> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    // Certificate and CA files named in a check are read as the node would.
    if ["/dev", "/proc", "/sys", "/run"]
        .iter()
        .any(|p| bytes.windows(p.len()).any(|w| w == p.as_bytes()))
    {
        return;
    }
    let r = REPLICA.get_or_init(Replica::sample);
    match kind % 9 {
        0 => {
            if let Ok(req) = pb::CreateFarmRequest::decode(bytes) {
                r.create_farm(&req);
            }
        }
        1 => {
            if let Ok(req) = pb::UpdateFarmRequest::decode(bytes) {
                r.update_farm(&req);
            }
        }
        2 => {
            if let Ok(req) = pb::GetFarmRequest::decode(bytes) {
                r.farm_by_name(&req.name);
            }
        }
        3 => {
            if let Ok(req) = pb::AddBackendRequest::decode(bytes) {
                r.add_backend(&req);
            }
        }
        4 => {
            if let Ok(req) = pb::UpdateBackendRequest::decode(bytes) {
                r.update_backend(&req);
            }
        }
        5 => {
            if let Ok(req) = pb::DeleteBackendRequest::decode(bytes) {
                r.delete_backend(&req);
            }
        }
        6 => {
            if let Ok(req) = pb::ApplyRequest::decode(bytes) {
                r.apply(&req);
            }
        }
        7 => {
            if let Ok(req) = pb::ListPersistenceRequest::decode(bytes) {
                r.persistence(&req, &pb::FlushPersistenceRequest::default());
            }
        }
        _ => {
            if let Ok(req) = pb::FlushPersistenceRequest::decode(bytes) {
                r.persistence(&pb::ListPersistenceRequest::default(), &req);
            }
        }
    }
});
