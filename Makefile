# Build and install pullgate on a node.
#
#   make                      build the release binary (cargo build --release --locked)
#   sudo make install         install the binary, the systemd unit, an example config (only if
#                             none exists), an empty policy.d and keys/; then print the next steps
#   sudo make uninstall       remove the binary and the unit; config and policy are kept
#
# Variables:
#   PREFIX   where the binary goes, as $(PREFIX)/bin/pullgate (default /usr/local)
#   DESTDIR  staging root prepended to every installed path (packaging, tests)
#   BIN      a prebuilt binary to install instead of building one
#   UNITDIR  where the unit goes (default /etc/systemd/system)

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
UNITDIR ?= /etc/systemd/system
# Fixed, not configurable: the daemon's defaults (config file, policy_dir) live here.
CONFDIR := /etc/pullgate
CARGO ?= cargo
INSTALL ?= install

RELEASE_BIN := target/release/pullgate
BIN ?= $(RELEASE_BIN)
# Why list the sources: `sudo make install` after a `git pull` must not install a stale binary.
SOURCES := Cargo.toml Cargo.lock build.rs $(shell find src proto -type f 2>/dev/null)

.PHONY: all build install uninstall

all: build

build:
	$(CARGO) build --release --locked

$(RELEASE_BIN): $(SOURCES)
	$(CARGO) build --release --locked

# A BIN given on the command line has no rule here, so installing it never runs cargo.
install: $(BIN)
	$(INSTALL) -d -m 0755 "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(CONFDIR)"
	$(INSTALL) -m 0755 "$(BIN)" "$(DESTDIR)$(BINDIR)/pullgate"
	sed 's|/usr/local/bin/pullgate|$(BINDIR)/pullgate|' systemd/pullgate.service > "$(DESTDIR)$(UNITDIR)/pullgate.service.tmp"
	chmod 0644 "$(DESTDIR)$(UNITDIR)/pullgate.service.tmp"
	mv -f "$(DESTDIR)$(UNITDIR)/pullgate.service.tmp" "$(DESTDIR)$(UNITDIR)/pullgate.service"
	@# An existing config is the operator's: never overwrite it.
	@if [ -e "$(DESTDIR)$(CONFDIR)/pullgate.toml" ]; then \
		echo "keeping existing $(DESTDIR)$(CONFDIR)/pullgate.toml"; \
	else \
		$(INSTALL) -m 0644 config/pullgate.toml "$(DESTDIR)$(CONFDIR)/pullgate.toml"; \
	fi
	$(INSTALL) -d -m 0755 "$(DESTDIR)$(CONFDIR)/policy.d" "$(DESTDIR)$(CONFDIR)/keys"
	@sock=$$(sed -n 's/^listen *= *"\(.*\)".*/\1/p' "$(DESTDIR)$(CONFDIR)/pullgate.toml" | tail -n 1); \
	sock=$${sock:-/run/pullgate/pullgate.sock}; \
	echo; \
	echo "pullgate installed. Next steps:"; \
	echo "  1. Put public keys into $(CONFDIR)/keys and policy files into $(CONFDIR)/policy.d"; \
	echo "     (see docs/policy.md). With no rules, every image pull is refused."; \
	echo "  2. Check them: pullgate policy check"; \
	echo "     and try an image: pullgate verify IMAGE --namespace NAMESPACE"; \
	echo "  3. systemctl daemon-reload && systemctl enable --now pullgate"; \
	echo "  4. Point the kubelet's image service at pullgate, in its KubeletConfiguration:"; \
	echo "       imageServiceEndpoint: unix://$$sock"; \
	echo "     or with the flag --image-service-endpoint=unix://$$sock"; \
	echo "     keep containerRuntimeEndpoint on containerd, then: systemctl restart kubelet"; \
	echo "Only the kubelet's pulls go through pullgate: containerd's own pulls (the pause"; \
	echo "image, sandbox_image in containerd's config) and ctr/nerdctl pulls are not verified."

# The warning comes first: once the binary is gone, a kubelet still pointed at pullgate can
# pull nothing, and that is worth reading before it happens, not after.
uninstall:
	@echo "Roll back before uninstalling: remove imageServiceEndpoint from the kubelet, restart it,"
	@echo "then systemctl disable --now pullgate (see README)."
	rm -f "$(DESTDIR)$(BINDIR)/pullgate" "$(DESTDIR)$(UNITDIR)/pullgate.service"
	@echo "removed pullgate; kept $(CONFDIR) (config, keys and policy): remove it yourself if unneeded."
