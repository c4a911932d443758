# The HA Redis of examples/ring.yaml as a Habitat plan: `hab pkg build examples/redis`,
# then `hab pkg export container habring/redis` makes the image habring/redis that the
# redis Deployment runs. Redis itself comes from core/redis; this plan adds what a leader
# topology needs (hooks/ and config/, README.md beside this file says why each exists).
pkg_origin=habring
pkg_name=redis
pkg_version="7.0.15"
pkg_maintainer="habring"
pkg_license=("BSD-3-Clause")
pkg_deps=(core/redis core/busybox-static)
pkg_exports=(
  [port]=port
)
pkg_exposes=(port)
pkg_svc_user="hab"
pkg_svc_group="hab"

do_build() { return 0; }
do_install() { return 0; }
