//! Identifier formats of Fly (reference §4): machine ids, volume ids, app ids, ULID instance
//! ids, lease nonces, generated machine names, zone ids and 6PN private addresses.
//! Pure: randomness comes from the caller's seeded generator, no I/O and no global state.

use rand::Rng;
use std::net::Ipv6Addr;

const HEX: &[u8] = b"0123456789abcdef";
const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn pick(rng: &mut impl Rng, alphabet: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// A machine id: 14 lowercase hex characters (`1857156b526dd8`).
pub fn machine_id(rng: &mut impl Rng) -> String {
    pick(rng, HEX, 14)
}

/// A volume id: `vol_` + 16 lowercase alphanumerics (`vol_9vw681egy1jj5xm4`).
pub fn volume_id(rng: &mut impl Rng) -> String {
    format!("vol_{}", pick(rng, ALNUM, 16))
}

/// An app id: 16 lowercase alphanumerics.
pub fn app_id(rng: &mut impl Rng) -> String {
    pick(rng, ALNUM, 16)
}

/// A lease nonce: 12 hex characters (reference §2.3.2).
pub fn nonce(rng: &mut impl Rng) -> String {
    pick(rng, HEX, 12)
}

/// A ULID (26 Crockford base32 characters): 48 bits of milliseconds then 80 random bits.
pub fn ulid(rng: &mut impl Rng, now_ms: u64) -> String {
    let value: u128 = (u128::from(now_ms & 0xffff_ffff_ffff) << 80) | (rng.random::<u128>() >> 48);
    (0..26)
        .map(|i| {
            let shift = 125 - 5 * i;
            CROCKFORD[((value >> shift) & 0x1f) as usize] as char
        })
        .collect()
}

const ADJECTIVES: &[&str] = &[
    "aged",
    "ancient",
    "autumn",
    "billowing",
    "bitter",
    "black",
    "blue",
    "bold",
    "broad",
    "broken",
    "calm",
    "cold",
    "cool",
    "crimson",
    "curly",
    "damp",
    "dark",
    "dawn",
    "delicate",
    "divine",
    "dry",
    "empty",
    "falling",
    "fancy",
    "flat",
    "floral",
    "fragrant",
    "frosty",
    "gentle",
    "green",
    "hidden",
    "holy",
    "icy",
    "jolly",
    "late",
    "lingering",
    "little",
    "lively",
    "long",
    "lucky",
];
const NOUNS: &[&str] = &[
    "art",
    "band",
    "bar",
    "base",
    "bird",
    "block",
    "boat",
    "bonus",
    "bread",
    "breeze",
    "brook",
    "bush",
    "butterfly",
    "cake",
    "cell",
    "cherry",
    "cloud",
    "credit",
    "darkness",
    "dawn",
    "dew",
    "disk",
    "dream",
    "dust",
    "feather",
    "field",
    "fire",
    "firefly",
    "flower",
    "fog",
    "forest",
    "frog",
    "frost",
    "glade",
    "glitter",
    "grass",
    "hall",
    "hat",
    "haze",
    "thunder",
];

/// A generated machine name, adjective-noun-NNNN (`aged-thunder-7371`, reference §4).
pub fn machine_name(rng: &mut impl Rng) -> String {
    let a = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let n = NOUNS[rng.random_range(0..NOUNS.len())];
    format!("{a}-{n}-{:04}", rng.random_range(0..10_000))
}

/// FNV-1a, used to derive stable values (zone ids, network prefixes) from names.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The zone ids of a region: `count` distinct 4-hex host ids derived from the region name, so
/// they stay the same across restarts and can be named in `--faults capacity=sjc:09cd`.
pub fn zone_ids(
    region: &str,
    count: usize,
    taken: &mut std::collections::HashSet<String>,
) -> Vec<String> {
    let mut out = Vec::with_capacity(count);
    let mut i = 0u64;
    while out.len() < count {
        let z = format!("{:04x}", fnv1a(format!("{region}/{i}").as_bytes()) & 0xffff);
        i += 1;
        if taken.insert(z.clone()) {
            out.push(z);
        }
    }
    out
}

/// The /48 that holds every 6PN address [`private_ip`] gives machines of `network` (`fdaa:` +
/// 24 bits of the network); a lab bridge for that network routes this prefix.
pub fn network_prefix(network: &str) -> Ipv6Addr {
    let net = fnv1a(network.as_bytes()) as u32 & 0x00ff_ffff;
    Ipv6Addr::new(0xfdaa, (net >> 16) as u16, net as u16, 0, 0, 0, 0, 0)
}

/// A private 6PN address in Fly's layout (reference §4): `fdaa` | 32 bits network (from the
/// org slug or the app's custom network) | 32 bits host (from the zone) | 32 bits machine | `2`.
pub fn private_ip(network: &str, zone: &str, rng: &mut impl Rng) -> Ipv6Addr {
    private_ip_on_host(network, zone, 0, rng)
}

/// [`private_ip`] on host number `host` of the zone: host 0 is where machines are created;
/// a migration moves a machine to the next host, whose 32 host bits differ (reference
/// fly-runtime.md §4: "6PN addresses change on host migration").
pub fn private_ip_on_host(network: &str, zone: &str, host: u32, rng: &mut impl Rng) -> Ipv6Addr {
    let net = fnv1a(network.as_bytes()) as u32 & 0x00ff_ffff;
    let host = if host == 0 {
        fnv1a(zone.as_bytes()) as u32
    } else {
        fnv1a(format!("{zone}#{host}").as_bytes()) as u32
    };
    let machine: u32 = rng.random();
    Ipv6Addr::new(
        0xfdaa,
        (net >> 16) as u16,
        net as u16,
        (host >> 16) as u16,
        host as u16,
        (machine >> 16) as u16,
        machine as u16,
        2,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn ids_have_fly_formats() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let m = machine_id(&mut rng);
        assert_eq!(m.len(), 14);
        assert!(m
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let v = volume_id(&mut rng);
        assert!(v.starts_with("vol_") && v.len() == 20);
        let u = ulid(&mut rng, 1_699_408_350_000);
        assert_eq!(u.len(), 26);
        assert!(u.starts_with("01HEPA"), "{u}");
        assert_eq!(nonce(&mut rng).len(), 12);
        let name = machine_name(&mut rng);
        assert_eq!(name.split('-').count(), 3);
    }

    #[test]
    fn same_seed_gives_same_ids() {
        let a = machine_id(&mut ChaCha8Rng::seed_from_u64(7));
        let b = machine_id(&mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(a, b);
    }

    #[test]
    fn zone_ids_are_stable_and_distinct() {
        let mut taken = std::collections::HashSet::new();
        let z = zone_ids("sjc", 3, &mut taken);
        let z2 = zone_ids("sjc", 3, &mut std::collections::HashSet::new());
        assert_eq!(z, z2);
        assert_eq!(z.len(), 3);
        assert!(z.iter().all(|z| z.len() == 4));
    }

    #[test]
    fn private_ip_is_in_6pn_layout() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let ip = private_ip("personal", "09cd", &mut rng);
        let s = ip.segments();
        assert_eq!(s[0], 0xfdaa);
        assert_eq!(s[7], 2);
        let again = private_ip("personal", "09cd", &mut rng).segments();
        assert_eq!(s[..5], again[..5]);
        // Another host of the same zone: same network, other host bits.
        let moved = private_ip_on_host("personal", "09cd", 1, &mut rng).segments();
        assert_eq!(s[..3], moved[..3]);
        assert_ne!(s[3..5], moved[3..5]);
    }
}
