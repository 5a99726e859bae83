// kubeletclient talks to a CRI image service exactly as the kubelet does: through
// k8s.io/cri-client's remote image service, the package the kubelet itself links, at the
// version of the newest Kubernetes release (see go.mod). It shows what the kubelet would see
// of pullgate's answers, including the code stripping and retries that library does.
//
//	kubeletclient ENDPOINT TIMEOUT
//
// ENDPOINT is the kubelet's --image-service-endpoint (unix:///…/pullgate.sock); TIMEOUT is
// its --runtime-request-timeout (a Go duration), which the kubelet passes to the library as
// both the connection timeout and the deadline of every call but PullImage.
//
// It connects once, as the kubelet does at startup, and keeps that one connection while it
// reads requests from stdin, one a line: "pull IMAGE" or "status IMAGE". For the connection
// and for each request it prints one JSON line on stdout (see `answer`).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	crierrors "k8s.io/cri-api/pkg/errors"
	cri "k8s.io/cri-client/pkg"
)

// answer is one JSON line: what a call returned, as the kubelet receives it.
type answer struct {
	Op    string `json:"op"`
	Image string `json:"image,omitempty"`
	OK    bool   `json:"ok"`
	// PullImage's image_ref, or ImageStatus's image id ("" when the image is absent).
	ImageRef string   `json:"image_ref,omitempty"`
	RepoTags []string `json:"repo_tags,omitempty"`
	// The gRPC status of the error. cri-client turns an UNKNOWN status into a plain error
	// holding only its message (so that the kubelet can read the reason prefix), which
	// status.Code reports as Unknown again.
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	// How the kubelet's image manager classifies a PullImage error: the reason it records
	// in the pod's status and events.
	Reason    string `json:"reason,omitempty"`
	ElapsedMs int64  `json:"elapsed_ms"`
}

// The kubelet's fallback reason for a failed pull that names no CRI reason
// (pkg/kubelet/images/types.go, ErrImagePull).
const errImagePull = "ErrImagePull"

// reason classifies a PullImage error as the kubelet's image manager does
// (k8s.io/kubernetes pkg/kubelet/images/image_manager.go, evalCRIPullErr): it cannot use
// errors.Is across gRPC, so it looks only at whether the error text starts with the name of
// one of the CRI's well-known errors (k8s.io/cri-api/pkg/errors). That works only for an
// UNKNOWN status, whose code cri-client strips; any other code leaves "rpc error: code = …"
// in front of the name, and the pull is a plain ErrImagePull.
func reason(err error) string {
	for _, known := range []error{crierrors.ErrRegistryUnavailable, crierrors.ErrSignatureValidationFailed} {
		if strings.HasPrefix(err.Error(), known.Error()) {
			return known.Error()
		}
	}
	return errImagePull
}

func failed(a answer, err error) answer {
	s := status.Convert(err)
	a.Code, a.Message = s.Code().String(), s.Message()
	return a
}

func pull(ctx context.Context, images internalapi.ImageManagerService, image string) answer {
	a := answer{Op: "pull", Image: image}
	ref, err := images.PullImage(ctx, &runtimeapi.ImageSpec{Image: image}, nil, nil)
	if err != nil {
		a = failed(a, err)
		a.Reason = reason(err)
		return a
	}
	a.OK, a.ImageRef = true, ref
	return a
}

func imageStatus(ctx context.Context, images internalapi.ImageManagerService, image string) answer {
	a := answer{Op: "status", Image: image}
	resp, err := images.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: image}, false)
	if err != nil {
		return failed(a, err)
	}
	a.OK = true
	if resp.Image != nil {
		a.ImageRef, a.RepoTags = resp.Image.Id, resp.Image.RepoTags
	}
	return a
}

func serve(ctx context.Context, images internalapi.ImageManagerService, out *json.Encoder) error {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		op, image, _ := strings.Cut(strings.TrimSpace(in.Text()), " ")
		started := time.Now()
		var a answer
		switch op {
		case "pull":
			a = pull(ctx, images, image)
		case "status":
			a = imageStatus(ctx, images, image)
		default:
			return fmt.Errorf("unknown request %q (want \"pull IMAGE\" or \"status IMAGE\")", in.Text())
		}
		a.ElapsedMs = time.Since(started).Milliseconds()
		if err := out.Encode(a); err != nil {
			return err
		}
	}
	return in.Err()
}

func run() error {
	if len(os.Args) != 3 {
		return errors.New("usage: kubeletclient ENDPOINT TIMEOUT")
	}
	timeout, err := time.ParseDuration(os.Args[2])
	if err != nil {
		return err
	}
	ctx := context.Background()
	out := json.NewEncoder(os.Stdout)
	started := time.Now()
	images, err := cri.NewRemoteImageServiceBuilder().
		WithEndpoint(os.Args[1]).
		WithConnectionTimeout(timeout).
		Build(ctx)
	connected := answer{Op: "connect", OK: err == nil}
	if err != nil {
		connected = failed(connected, err)
	}
	connected.ElapsedMs = time.Since(started).Milliseconds()
	if err := out.Encode(connected); err != nil || !connected.OK {
		return err
	}
	defer images.Close(ctx)
	return serve(ctx, images, out)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kubeletclient:", err)
		os.Exit(1)
	}
}
