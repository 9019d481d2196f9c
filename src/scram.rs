//! PostgreSQL's SCRAM-SHA-256 password verifier (RFC 5802, RFC 7677), computed here so that
//! `ALTER ROLE ... PASSWORD '<verifier>'` never carries the clear text to the server, its
//! log or `pg_stat_activity`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// PostgreSQL's default (`scram_iterations`).
const ITERATIONS: u32 = 4096;

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` for `password` and `salt`.
pub fn verifier_with_salt(password: &str, salt: &[u8]) -> String {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, ITERATIONS, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

/// A verifier with a fresh random 16-byte salt.
pub fn verifier(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    verifier_with_salt(password, &salt)
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// A new secret: alphanumeric (nothing compose interpolation, a shell or a URL could bend).
pub fn generate(length: usize) -> String {
    use rand::Rng;
    rand::rngs::OsRng
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_verifier_postgresql_computed() {
        // PostgreSQL 15 (the sandbox's): SET password_encryption = 'scram-sha-256';
        // CREATE ROLE r PASSWORD 'pencil'; SELECT rolpassword FROM pg_authid WHERE rolname = 'r';
        let from_postgres = "SCRAM-SHA-256$4096:3XNIXAt5+HZu7KoKnT8SHA==$9IU36EzKvDqOEOcm8RxAyP+4mVfvvLjKnbQWRaey28Y=:CXHlQUqhezgIbhebuFdtdERTV3yHf8T65lN4zwRwmsI=";
        let salt = STANDARD.decode("3XNIXAt5+HZu7KoKnT8SHA==").unwrap();
        assert_eq!(verifier_with_salt("pencil", &salt), from_postgres);
        assert_ne!(verifier("pencil"), verifier("pencil"), "salted afresh");
    }

    #[test]
    fn generated_secrets_are_alphanumeric() {
        let s = generate(40);
        assert_eq!(s.len(), 40);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(s, generate(40));
    }
}
