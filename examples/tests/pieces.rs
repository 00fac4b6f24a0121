//! The pieces the sample applications share, over heap-backed zones.
use hugeshare_examples::{
    read_text, write_text, AppArgs, FiveTuple, FlowGen, PacketHeader, Registry, HEADER_LEN,
};
use rte_mempool::{Mempool, MempoolParams};
use shmconfig::{LocalZones, MemberId, MemberState};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn header_round_trips_through_a_pool_object() {
    let z = LocalZones::new();
    let mp = Mempool::create(&z, "p", MempoolParams::new(7, 64)).unwrap();
    let o = mp.get().unwrap();
    let h = PacketHeader {
        flow: FiveTuple {
            src_ip: 0x0a000001,
            dst_ip: 0xc0a80001,
            src_port: 1234,
            dst_port: 4789,
            proto: 17,
        },
        len: 64,
        port: 3,
        seq: 0x0102_0304_0506_0708,
    };
    h.write(&mp, o);
    assert_eq!(PacketHeader::read(&mp, o), h);
    assert_eq!(h.to_bytes().len(), HEADER_LEN);
    mp.put(o);
}

#[test]
fn text_is_cut_at_the_object_size_on_a_char_boundary() {
    let z = LocalZones::new();
    let mp = Mempool::create(&z, "t", MempoolParams::new(3, 8)).unwrap();
    let o = mp.get().unwrap();
    assert_eq!(write_text(&mp, o, "héllo"), 6);
    assert_eq!(read_text(&mp, o), "héllo");
    // 6 bytes of room: "ééé" is 6 bytes, "éééé" is cut to 3 whole characters
    assert_eq!(write_text(&mp, o, "éééé"), 6);
    assert_eq!(read_text(&mp, o), "ééé");
    mp.put(o);
}

#[test]
fn flows_repeat_and_sequence_numbers_follow() {
    let mut g = FlowGen::new(4, 7, 1);
    let hs: Vec<PacketHeader> = (0..1000).map(|_| g.next_header()).collect();
    let mut flows: Vec<[u8; 13]> = hs.iter().map(|h| h.flow.key()).collect();
    flows.sort();
    flows.dedup();
    assert_eq!(flows.len(), 4);
    assert!(hs.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    g.rewind(10);
    assert_eq!(g.next_header().seq, 991);
}

#[test]
fn app_args_parse_values_flags_and_refuse_unknown_options() {
    let a = AppArgs::parse(
        &s(&["--num-procs", "3", "--proc-id=1", "--no-track"]),
        &["--num-procs", "--proc-id"],
        &["--no-track"],
    )
    .unwrap();
    assert_eq!(a.num("--num-procs", 0usize).unwrap(), 3);
    assert_eq!(a.num("--proc-id", 0usize).unwrap(), 1);
    assert_eq!(a.num("--burst", 32usize).unwrap(), 32);
    assert!(a.flag("--no-track"));
    let e = AppArgs::parse(&s(&["--bogus"]), &["--num-procs"], &[]).unwrap_err();
    assert!(e.to_string().contains("--bogus"), "{e}");
    let e = AppArgs::parse(&s(&["--num-procs"]), &["--num-procs"], &[]).unwrap_err();
    assert!(e.to_string().contains("needs a value"), "{e}");
    let a = AppArgs::parse(&s(&["--num-procs", "x"]), &["--num-procs"], &[]).unwrap();
    assert!(a.num("--num-procs", 0u32).is_err());
}

#[test]
fn registry_refuses_a_live_holder_and_hands_a_dead_ones_slot_over() {
    let z0 = LocalZones::new();
    let z1 = z0.as_member(MemberId(1));
    let z2 = z0.as_member(MemberId(2));
    let reg = Registry::create(&z0, "reg", 2).unwrap();
    reg.claim(0, &z1).unwrap();
    assert_eq!(reg.member(0), Some(MemberId(1)));
    assert_eq!(reg.slot_of(MemberId(1)), Some(0));
    let e = reg.claim(0, &z2).unwrap_err();
    assert!(e.to_string().contains("taken by live member 1"), "{e}");
    assert!(reg.claim(2, &z2).is_err(), "slot out of range");
    z0.set_member_state(MemberId(1), MemberState::Dead);
    reg.claim(0, &z2).unwrap();
    assert_eq!(reg.member(0), Some(MemberId(2)));
    assert!(
        !reg.release_if(0, MemberId(1)),
        "only the recorded member's word is released"
    );
    assert!(reg.release_if(0, MemberId(2)));
    assert_eq!(reg.member(0), None);
    let seen = Registry::lookup(&z1, "reg").unwrap();
    assert_eq!(seen.len(), 2);
}
