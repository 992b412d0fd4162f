//! Just enough STUN (RFC 8489) to route a datagram from an unknown source:
//! find the USERNAME attribute of a binding request and take the server's
//! ufrag out of it. Everything is bounds-checked; anything odd is `None`.
//! str0m verifies MESSAGE-INTEGRITY later; this parser only picks the peer.

const HEADER_LEN: usize = 20;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
/// RFC 8489 §14.3: USERNAME is at most 513 bytes; browsers send far less.
/// A little slack for lenient peers, still far below a datagram.
const MAX_USERNAME_LEN: usize = 763;

/// Does this datagram look like STUN (RFC 7983 demultiplexing: first byte
/// 0..=3, then the magic cookie)?
pub(crate) fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN && datagram[0] < 4 && datagram[4..8] == MAGIC_COOKIE
}

/// The raw USERNAME attribute value, if this is a well-formed STUN message
/// carrying one.
pub(crate) fn username(datagram: &[u8]) -> Option<&[u8]> {
    if !is_stun(datagram) {
        return None;
    }
    let declared = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    // The message length excludes the header and is a multiple of 4.
    if declared % 4 != 0 {
        return None;
    }
    let body = datagram.get(HEADER_LEN..HEADER_LEN.checked_add(declared)?)?;
    let mut rest = body;
    while rest.len() >= 4 {
        let ty = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if ty == ATTR_USERNAME {
            return (len <= MAX_USERNAME_LEN).then_some(value);
        }
        // Values are padded to a multiple of 4.
        let padded = 4 + len.div_ceil(4) * 4;
        rest = rest.get(padded..)?;
    }
    None
}

/// The server's ufrag from a binding request sent to the server: USERNAME is
/// `"<server ufrag>:<client ufrag>"`.
pub(crate) fn server_ufrag(datagram: &[u8]) -> Option<&str> {
    let username = std::str::from_utf8(username(datagram)?).ok()?;
    let (server, _client) = username.split_once(':')?;
    (!server.is_empty()).then_some(server)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A binding request with the given attributes `(type, value)`.
    pub(crate) fn stun_message(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (ty, value) in attrs {
            body.extend_from_slice(&ty.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&body);
        m
    }

    pub(crate) fn binding_request(username: &str) -> Vec<u8> {
        stun_message(&[
            (0x0024, &[0, 0, 0, 1]), // PRIORITY before USERNAME
            (ATTR_USERNAME, username.as_bytes()),
            (0x0008, &[0xAB; 20]), // MESSAGE-INTEGRITY
        ])
    }

    #[test]
    fn finds_the_server_ufrag() {
        let m = binding_request("srvUfrag123:cli9");
        assert!(is_stun(&m));
        assert_eq!(username(&m), Some(&b"srvUfrag123:cli9"[..]));
        assert_eq!(server_ufrag(&m), Some("srvUfrag123"));
        // An odd-length username exercises padding of a non-final attribute.
        let m = binding_request("abc:d");
        assert_eq!(server_ufrag(&m), Some("abc"));
    }

    #[test]
    fn no_username_or_bad_username_is_none() {
        let m = stun_message(&[(0x0024, &[0, 0, 0, 1])]);
        assert_eq!(username(&m), None);
        assert_eq!(server_ufrag(&binding_request("nocolon")), None);
        assert_eq!(server_ufrag(&binding_request(":client")), None);
        let m = stun_message(&[(ATTR_USERNAME, &[0xff, 0xfe, b':', b'a'])]);
        assert_eq!(server_ufrag(&m), None, "not UTF-8");
        let long = "a".repeat(MAX_USERNAME_LEN + 1) + ":b";
        assert_eq!(server_ufrag(&binding_request(&long)), None);
    }

    #[test]
    fn truncated_messages_are_none() {
        let m = binding_request("srv:cli");
        for len in 0..m.len() {
            assert_eq!(server_ufrag(&m[..len]), None, "prefix of {len} bytes");
        }
    }

    #[test]
    fn overflowing_attribute_lengths_are_none() {
        let mut m = stun_message(&[(ATTR_USERNAME, b"srv:cli")]);
        // Attribute length claims more than the message holds.
        m[22..24].copy_from_slice(&0xFFFFu16.to_be_bytes());
        assert_eq!(username(&m), None);
        // Message length claims more than the datagram holds.
        let mut m = binding_request("srv:cli");
        m[2..4].copy_from_slice(&0xFFFCu16.to_be_bytes());
        assert_eq!(username(&m), None);
        // Message length not a multiple of 4.
        let mut m = binding_request("srv:cli");
        let len = u16::from_be_bytes([m[2], m[3]]) - 1;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        assert_eq!(username(&m), None);
        // A preceding attribute whose padded length runs past the end.
        let mut m = stun_message(&[(0x0024, &[0, 0, 0, 1]), (ATTR_USERNAME, b"s:c")]);
        m[22..24].copy_from_slice(&5u16.to_be_bytes());
        assert_eq!(username(&m), None);
    }

    #[test]
    fn garbage_is_not_stun() {
        assert!(!is_stun(&[]));
        assert!(!is_stun(&[
            0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]));
        let mut m = binding_request("srv:cli");
        m[5] ^= 1; // wrong magic cookie
        assert_eq!(server_ufrag(&m), None);
        // Every short byte string is handled without a panic.
        let mut x: u32 = 0x1234_5678;
        for len in 0..64 {
            for _ in 0..200 {
                let mut v: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                if v.len() >= 8 {
                    v[0] &= 0x03;
                    v[4..8].copy_from_slice(&MAGIC_COOKIE);
                }
                let _ = server_ufrag(&v);
            }
        }
    }
}
