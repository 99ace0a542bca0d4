package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certSpec names one certificate of the cluster and what it is for.
type certSpec struct {
	name   string // file stem under pki/
	ca     string // stem of the signing CA
	cn     string
	orgs   []string
	server bool
	client bool
	dns    []string
	ips    []net.IP
}

// clusterCerts is every certificate the components need. Client identities
// follow the names the bootstrap RBAC policy and the Node authorizer expect.
func clusterCerts() []certSpec {
	ip := net.ParseIP
	return []certSpec{
		{name: "apiserver", ca: "ca", cn: "kube-apiserver", server: true,
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", nodeName},
			ips: []net.IP{ip(apiServiceIP), ip(nodeIP), ip("127.0.0.1")}},
		{name: "apiserver-kubelet-client", ca: "ca", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{name: "front-proxy-client", ca: "front-proxy-ca", cn: "front-proxy-client", client: true},
		{name: "admin", ca: "ca", cn: "kubectl-cz-admin", orgs: []string{"system:masters"}, client: true},
		{name: "controller-manager", ca: "ca", cn: "system:kube-controller-manager", client: true},
		{name: "scheduler", ca: "ca", cn: "system:kube-scheduler", client: true},
		{name: "kubelet-client", ca: "ca", cn: "system:node:" + nodeName, orgs: []string{"system:nodes"}, client: true},
		{name: "kubelet", ca: "ca", cn: nodeName, server: true, dns: []string{nodeName}, ips: []net.IP{ip(nodeIP)}},
		{name: "kube-proxy", ca: "ca", cn: "system:kube-proxy", client: true},
	}
}

// ensurePKI creates what is missing under dir and keeps what exists, so a
// restart keeps the identities (and tokens signed by the service-account key).
func ensurePKI(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, ca := range []string{"ca", "front-proxy-ca"} {
		if err := ensureCA(dir, ca); err != nil {
			return fmt.Errorf("CA %s: %w", ca, err)
		}
	}
	for _, spec := range clusterCerts() {
		if exists(filepath.Join(dir, spec.name+".crt")) && exists(filepath.Join(dir, spec.name+".key")) {
			continue
		}
		if err := issue(dir, spec); err != nil {
			return fmt.Errorf("certificate %s: %w", spec.name, err)
		}
	}
	if !exists(filepath.Join(dir, "sa.key")) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		if err := writeKey(filepath.Join(dir, "sa.key"), key); err != nil {
			return err
		}
		pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func ensureCA(dir, name string) error {
	if exists(filepath.Join(dir, name+".crt")) && exists(filepath.Join(dir, name+".key")) {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kubectl-cz-local-" + name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	if err := writeKey(filepath.Join(dir, name+".key"), key); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der, 0o644)
}

func issue(dir string, spec certSpec) error {
	caCert, caKey, err := loadCA(dir, spec.ca)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: spec.cn, Organization: spec.orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     spec.dns,
		IPAddresses:  spec.ips,
	}
	if spec.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if spec.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writeKey(filepath.Join(dir, spec.name+".key"), key); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, spec.name+".crt"), "CERTIFICATE", der, 0o644)
}

func loadCA(dir, name string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("CA files are not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

func writePEM(path, kind string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
