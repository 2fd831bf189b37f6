// Command control-plane is a single-process Kubernetes API server for tests:
// in-process etcd, the unmodified apiextensions-apiserver for CRDs, and the
// built-in kinds an operator and helm need, served by the generic registry.
// See README.md for how it is built and how it differs from kube-apiserver.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

func main() {
	stateDir := flag.String("state-dir", "", "directory for etcd data, certificates, kubeconfig, port and ready files (required)")
	requestLog := flag.String("request-log", "", "append one JSON line per API request to this file")
	klog.InitFlags(nil)
	flag.Parse()
	if *stateDir == "" {
		fmt.Fprintln(os.Stderr, "control-plane: --state-dir is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *stateDir, *requestLog); err != nil {
		fmt.Fprintf(os.Stderr, "control-plane: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, stateDir, requestLogPath string) error {
	stateDir, err := filepath.Abs(stateDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	// Stale markers of an earlier run must not be mistaken for this one.
	for _, f := range []string{"ready", "port", "kubeconfig"} {
		_ = os.Remove(filepath.Join(stateDir, f))
	}

	etcd, etcdURL, err := startEtcd(filepath.Join(stateDir, "etcd"))
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()

	certs, err := writeCerts(stateDir)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port

	var reqLog *requestLogger
	if requestLogPath != "" {
		if reqLog, err = newRequestLogger(requestLogPath); err != nil {
			return fmt.Errorf("request log: %w", err)
		}
	}

	server, err := newServer(etcdURL, ln, certs, reqLog)
	if err != nil {
		return err
	}
	prepared, err := server.prepareRun()
	if err != nil {
		return err
	}

	if err := writeKubeconfig(filepath.Join(stateDir, "kubeconfig"), port, certs.caPEM); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(stateDir, "port"), []byte(fmt.Sprintf("%d\n", port))); err != nil {
		return err
	}

	runErr := make(chan error, 1)
	go func() { runErr <- prepared.RunWithContext(ctx) }()

	if err := waitReady(ctx, port, certs.caPEM, runErr); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(stateDir, "ready"), []byte(fmt.Sprintf("https://127.0.0.1:%d\n", port))); err != nil {
		return err
	}
	klog.Infof("control plane ready on https://127.0.0.1:%d (kubeconfig %s)", port, filepath.Join(stateDir, "kubeconfig"))

	select {
	case err := <-runErr:
		return err
	case <-ctx.Done():
	}
	// Graceful shutdown waits for long requests; a test server need not.
	select {
	case err := <-runErr:
		return err
	case <-time.After(5 * time.Second):
		klog.Warning("shutdown took longer than 5s; exiting")
		return nil
	}
}

// waitReady polls /readyz until it answers 200.
func waitReady(ctx context.Context, port int, caPEM []byte, runErr <-chan error) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", port)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case err := <-runErr:
			if err == nil {
				err = errors.New("server stopped before it became ready")
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "frys-control-plane/readiness-probe")
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/readyz not ok after 2 minutes (last: %v)", err)
		}
	}
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func writeKubeconfig(path string, port int, caPEM []byte) error {
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: frys-testenv
  cluster:
    server: https://127.0.0.1:%d
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: frys-test-token
contexts:
- name: frys-testenv
  context:
    cluster: frys-testenv
    user: %s
    namespace: default
current-context: frys-testenv
`, port, base64Std(caPEM), AdminUser, AdminUser)
	return writeFileAtomic(path, []byte(cfg))
}
