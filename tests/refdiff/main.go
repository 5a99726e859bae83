// refdiff reads image references, one JSON string per line on stdin, and prints for each how
// containerd reads it: a JSON object per line, in the same order. containerd's CRI plugin
// parses a PullImage name with distribution/reference's ParseDockerRef, which is
// ParseNormalizedNamed followed by dropping the tag when a digest is present; the fields
// printed here come from ParseNormalizedNamed so that the tag of a "name:tag@digest" is
// compared too, and "pinned" is what ParseDockerRef returns.
package main

import (
	"bufio"
	// Registers the digest algorithms, as containerd's own imports do; without them go-digest
	// calls every digest "unsupported".
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/json"
	"fmt"
	"os"

	"github.com/distribution/reference"
)

type reading struct {
	Input    string `json:"input"`
	Accepted bool   `json:"accepted"`
	Error    string `json:"error,omitempty"`
	Host     string `json:"host,omitempty"`
	Path     string `json:"path,omitempty"`
	Familiar string `json:"familiar,omitempty"`
	Tag      string `json:"tag,omitempty"`
	Digest   string `json:"digest,omitempty"`
	Pinned   string `json:"pinned,omitempty"`
}

func read(input string) reading {
	named, err := reference.ParseNormalizedNamed(input)
	if err != nil {
		return reading{Input: input, Error: err.Error()}
	}
	docker, err := reference.ParseDockerRef(input)
	if err != nil {
		return reading{Input: input, Error: "ParseDockerRef: " + err.Error()}
	}
	r := reading{
		Input:    input,
		Accepted: true,
		Host:     reference.Domain(named),
		Path:     reference.Path(named),
		Familiar: reference.FamiliarName(named),
		Pinned:   docker.String(),
	}
	if tagged, ok := named.(reference.Tagged); ok {
		r.Tag = tagged.Tag()
	}
	if digested, ok := named.(reference.Digested); ok {
		r.Digest = digested.Digest().String()
	}
	return r
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	for in.Scan() {
		var input string
		if err := json.Unmarshal(in.Bytes(), &input); err != nil {
			fmt.Fprintf(os.Stderr, "refdiff: line is not a JSON string: %v\n", err)
			os.Exit(2)
		}
		if err := enc.Encode(read(input)); err != nil {
			fmt.Fprintf(os.Stderr, "refdiff: %v\n", err)
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "refdiff: %v\n", err)
		os.Exit(2)
	}
}
