// Built in GOPATH mode (GO111MODULE=off) from Debian's Go library packages by
// scripts/testenv.sh.  This file only marks the package as module-aware so
// that /v3 import paths (go.etcd.io/etcd/server/v3/...) resolve in GOPATH
// mode ("minimal module compatibility").
module frys.test/controlplane

go 1.26
