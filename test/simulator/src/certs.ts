import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import forge from 'node-forge';

export interface TlsMaterial {
  caPem: string;
  certPem: string;
  keyPem: string;
}

// RSA keys come from node's native crypto (milliseconds) instead of forge's pure-JS generator
// (seconds); forge only builds and signs the X.509 certificates.
function rsaKeyPair(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

function serial(): string {
  // Positive serial number: clear the top bit.
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] as number) & 0x7f;
  return bytes.toString('hex');
}

/** A host name or address a certificate names: an IP address (v4 or v6) or a DNS name. */
function altName(name: string): { type: 2; value: string } | { type: 7; ip: string } {
  return isIP(name) === 0 ? { type: 2, value: name } : { type: 7, ip: name };
}

/** A CA the simulator signs its server certificate with: its certificate and private key, PEM. */
export interface CaMaterial {
  caPem: string;
  caKeyPem: string;
}

const DAY_MS = 24 * 60 * 60 * 1000;
const CA_SUBJECT = [
  { name: 'commonName', value: 'URS Microsoft Simulator CA' },
  { name: 'organizationName', value: 'URS simulator' },
];
/** A CA kept for reuse must outlive this: the server certificate of a start is valid no longer than its CA. */
const CA_MIN_REMAINING_MS = 30 * DAY_MS;

/** A fresh CA, valid for a year. */
export function createCa(now: number = Date.now()): CaMaterial {
  const caKeys = rsaKeyPair();
  const ca = forge.pki.createCertificate();
  ca.publicKey = forge.pki.publicKeyFromPem(caKeys.publicPem);
  ca.serialNumber = serial();
  ca.validity.notBefore = new Date(now - 60 * 60 * 1000);
  ca.validity.notAfter = new Date(now + 365 * DAY_MS);
  ca.setSubject(CA_SUBJECT);
  ca.setIssuer(CA_SUBJECT);
  ca.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  ca.sign(forge.pki.privateKeyFromPem(caKeys.privatePem), forge.md.sha256.create());
  return { caPem: forge.pki.certificateToPem(ca), caKeyPem: caKeys.privatePem };
}

/**
 * Whether `material` is a CA this simulator can keep signing with: a CA certificate valid now and for
 * another 30 days, and the private key of its public key. Anything that does not parse is not.
 */
export function isUsableCa(material: CaMaterial, now: number = Date.now()): boolean {
  try {
    const ca = forge.pki.certificateFromPem(material.caPem);
    const key = forge.pki.privateKeyFromPem(material.caKeyPem);
    const publicKey = ca.publicKey as forge.pki.rsa.PublicKey;
    const constraints = ca.getExtension('basicConstraints') as { cA?: boolean } | null;
    return (
      constraints?.cA === true &&
      publicKey.n.equals(key.n) &&
      publicKey.e.equals(key.e) &&
      ca.validity.notBefore.getTime() <= now &&
      ca.validity.notAfter.getTime() - now >= CA_MIN_REMAINING_MS &&
      ca.verify(ca)
    );
  } catch {
    return false;
  }
}

/**
 * A server certificate signed by `ca` (a fresh CA when none is given) for 127.0.0.1 / ::1 / localhost and
 * `names` (the host clients reach the simulator by in a container network, e.g. `sim`), valid no longer than
 * the CA.
 */
export function createTlsMaterial(names: readonly string[] = [], ca: CaMaterial = createCa()): TlsMaterial {
  const now = Date.now();
  const caCert = forge.pki.certificateFromPem(ca.caPem);
  const caKey = forge.pki.privateKeyFromPem(ca.caKeyPem);
  const serverKeys = rsaKeyPair();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(serverKeys.publicPem);
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(now - 60 * 60 * 1000);
  cert.validity.notAfter = new Date(Math.min(now + 365 * DAY_MS, caCert.validity.notAfter.getTime()));
  cert.setSubject([{ name: 'commonName', value: 'localhost' }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    {
      name: 'subjectAltName',
      altNames: [...new Set(['localhost', '127.0.0.1', '::1', ...names])].map(altName),
    },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(caKey, forge.md.sha256.create());

  return {
    caPem: ca.caPem,
    certPem: forge.pki.certificateToPem(cert),
    keyPem: serverKeys.privatePem,
  };
}
