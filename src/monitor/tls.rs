//! TLS certificate expiry: connect with rustls, read the leaf certificate
//! and its `notAfter`. The probe records the certificate without judging
//! trust (the HTTP check itself verifies it), so an expiring certificate is
//! reported even when it is also untrusted or already expired.

use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;

/// Days until the certificate served at `url` expires (negative: expired).
pub async fn days_left(url: &str, timeout: Duration) -> Result<i64, String> {
    let u = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = u.host_str().ok_or("no host")?.to_string();
    let port = u.port_or_known_default().unwrap_or(443);
    // The PVE client's verifier without pins: any certificate is taken (to
    // read its dates), its signatures are still checked.
    let (cfg, _) = crate::pve::tls::client_config(&crate::pve::tls::TlsMode::Insecure)
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|e| e.to_string())?;
    let fut = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let der = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .ok_or("no certificate")?;
        Ok::<_, String>(der)
    };
    let der = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| "timed out".to_string())??;
    let not_after = not_after(&der).ok_or("cannot read the certificate's expiry")?;
    Ok((not_after - chrono::Utc::now().timestamp()).div_euclid(86_400))
}

/// One DER element: (tag, content, rest).
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let l0 = *b.get(1)? as usize;
    let (len, hdr) = if l0 < 0x80 {
        (l0, 2)
    } else {
        let n = l0 & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let content = b.get(hdr..hdr + len)?;
    Some((tag, content, &b[hdr + len..]))
}

/// `notAfter` of an X.509 certificate, unix seconds.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, cert, _) = der(cert)?; // Certificate
    let (_, tbs, _) = der(cert)?; // TBSCertificate
    let mut rest = tbs;
    let (tag, _, r) = der(rest)?;
    if tag == 0xa0 {
        rest = r; // [0] version
    }
    // serialNumber, signature, issuer
    for _ in 0..3 {
        rest = der(rest)?.2;
    }
    let (_, validity, _) = der(rest)?;
    let (_, _, after) = der(validity)?; // notBefore
    let (tag, t, _) = der(after)?;
    let s = std::str::from_utf8(t).ok()?;
    let fmt = match tag {
        0x17 => {
            // UTCTime YYMMDDHHMMSSZ: 50..99 is 19xx.
            let yy: i32 = s.get(0..2)?.parse().ok()?;
            let century = if yy >= 50 { "19" } else { "20" };
            return parse_time(&format!("{century}{s}"));
        }
        0x18 => s.to_string(),
        _ => return None,
    };
    parse_time(&fmt)
}

fn parse_time(s: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    #[test]
    fn not_after_is_read_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.lan".to_string()]).unwrap();
        p.not_after = rcgen::date_time_ymd(2031, 7, 14);
        let cert = p.self_signed(&key).unwrap();
        let ts = super::not_after(cert.der()).unwrap();
        assert_eq!(ts, 1_941_753_600); // 2031-07-14T00:00:00Z
        p.not_after = rcgen::date_time_ymd(2051, 1, 2); // GeneralizedTime
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(super::not_after(cert.der()).unwrap(), 2_556_230_400);
    }
}
