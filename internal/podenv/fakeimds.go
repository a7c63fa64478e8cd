package podenv

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// InstanceMetadataBody is what the fake real IMDS answers on
// /metadata/instance (any sub-path, any query) when the request carries
// Metadata: true. Tests compare passthrough bodies with it byte for byte.
const InstanceMetadataBody = `{"compute":{"azEnvironment":"AzurePublicCloud","location":"podenvregion","name":"podenv-node-0","vmId":"00000000-0000-4000-8000-00000000f00d"},"network":{"interface":[]}}`

// fakeIMDSMissingMetadata is the real IMDS answer to a request without the
// Metadata header.
const fakeIMDSMissingMetadata = `{"error":"Bad request. Required metadata header not specified"}`

// IMDSRequest is one request the fake real IMDS received.
type IMDSRequest struct {
	Method     string
	RequestURI string
	Header     http.Header
	RemoteAddr string
}

// fakeIMDS stands in for the node's real IMDS on 169.254.169.254:80 in the
// node namespace. It runs in the harness process on a listener created
// inside that namespace, so it needs no binary of its own and records what
// reached it.
type fakeIMDS struct {
	srv  *http.Server
	done chan struct{}
	// latency delays every answer (SetIMDSLatency), in nanoseconds.
	latency atomic.Int64

	mu   sync.Mutex
	reqs []IMDSRequest
}

func startFakeIMDS(node string) (*fakeIMDS, error) {
	l, err := listenInNetns(node, net.JoinHostPort(MetadataAddr, "80"))
	if err != nil {
		return nil, err
	}
	f := &fakeIMDS{done: make(chan struct{})}
	f.srv = &http.Server{
		Handler:           http.HandlerFunc(f.serve),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		defer close(f.done)
		_ = f.srv.Serve(l)
	}()
	return f, nil
}

func (f *fakeIMDS) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, IMDSRequest{Method: r.Method, RequestURI: r.RequestURI, Header: r.Header.Clone(), RemoteAddr: r.RemoteAddr})
	f.mu.Unlock()
	if d := time.Duration(f.latency.Load()); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return // the client gave up: nothing to answer
		}
	}

	write := func(status int, body string) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
	if r.Header.Get("Metadata") != "true" {
		write(http.StatusBadRequest, fakeIMDSMissingMetadata)
		return
	}
	if r.URL.Path == "/metadata/instance" || strings.HasPrefix(r.URL.Path, "/metadata/instance/") {
		write(http.StatusOK, InstanceMetadataBody)
		return
	}
	write(http.StatusNotFound, `{"error":"Not found"}`)
}

// requests returns a copy of what reached the fake IMDS so far.
func (f *fakeIMDS) requests() []IMDSRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]IMDSRequest(nil), f.reqs...)
}

func (f *fakeIMDS) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := f.srv.Shutdown(ctx)
	<-f.done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
