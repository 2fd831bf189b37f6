package main

// Request log: one JSON line per API request, so tests can see exactly which
// calls a client made (e.g. to derive or check the RBAC rules it needs).
// Installed inside the generic handler chain, after authentication and
// request-info resolution; a line is written when the response status is
// known (a watch is logged when it starts, not when it ends).

import (
	"encoding/json"
	"net/http"
	"os"
	"sync"
	"time"

	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/endpoints/responsewriter"
)

type requestLogEntry struct {
	Time        string `json:"time"`
	UserAgent   string `json:"userAgent"`
	User        string `json:"user"`
	Verb        string `json:"verb"`
	APIGroup    string `json:"apiGroup"`
	APIVersion  string `json:"apiVersion"`
	Resource    string `json:"resource"`
	Subresource string `json:"subresource"`
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	Path        string `json:"path"`
	Code        int    `json:"code"`
}

type requestLogger struct {
	mu sync.Mutex
	f  *os.File
}

func newRequestLogger(path string) (*requestLogger, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &requestLogger{f: f}, nil
}

func (l *requestLogger) write(e *requestLogEntry) {
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.f.Write(b) // one write per line: O_APPEND keeps lines whole
}

// wrap logs every request that reaches h.
func (l *requestLogger) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		e := &requestLogEntry{UserAgent: req.UserAgent(), Path: req.URL.Path}
		if u, ok := request.UserFrom(req.Context()); ok {
			e.User = u.GetName()
		}
		if info, ok := request.RequestInfoFrom(req.Context()); ok {
			e.Verb = info.Verb
			e.APIGroup, e.APIVersion = info.APIGroup, info.APIVersion
			e.Resource, e.Subresource = info.Resource, info.Subresource
			e.Namespace, e.Name = info.Namespace, info.Name
		}
		rw := &statusRecorder{ResponseWriter: w, log: func(code int) {
			e.Code = code
			e.Time = time.Now().UTC().Format(time.RFC3339Nano)
			l.write(e)
		}}
		defer rw.done()
		h.ServeHTTP(responsewriter.WrapForHTTP1Or2(rw), req)
	})
}

// statusRecorder reports the status code once, when the header is written.
type statusRecorder struct {
	http.ResponseWriter
	once sync.Once
	log  func(code int)
}

var _ responsewriter.UserProvidedDecorator = &statusRecorder{}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) WriteHeader(code int) {
	r.once.Do(func() { r.log(code) })
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.once.Do(func() { r.log(http.StatusOK) })
	return r.ResponseWriter.Write(b)
}

// done logs requests that wrote nothing (implicit 200).
func (r *statusRecorder) done() { r.once.Do(func() { r.log(http.StatusOK) }) }
