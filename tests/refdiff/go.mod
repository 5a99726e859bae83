module pullgate.test/refdiff

go 1.22

// The version containerd v2.4.2 requires (its go.mod); containerd's CRI plugin parses every
// PullImage name with this package's ParseDockerRef.
require github.com/distribution/reference v0.6.0

require github.com/opencontainers/go-digest v1.0.0 // indirect
