# Install rules for sepal: the binary, the systemd unit, the sysusers.d file, the example
# config and the docs. Two users:
#   - the top-level project (target sepal): `cmake --install build-release` (prefix
#     /usr/local by default: /usr/local/bin/sepal, /usr/local/etc/sepal/sepal.yaml,
#     /usr/local/lib/systemd/system/sepal.service, ...);
#   - cmake/package (the Debian package, prefix /usr: /usr/bin/sepal, /etc/sepal/sepal.yaml,
#     /usr/lib/systemd/system/sepal.service), which packages the prebuilt binary
#     SEPAL_PACKAGE_BINARY.
# The unit is generated from deploy/systemd/sepal.service (which names /usr/local/bin and
# /etc/sepal) with this prefix's paths, when configuring: choose CMAKE_INSTALL_PREFIX then,
# `cmake --install --prefix` later does not rewrite the unit.
include(GNUInstallDirs)

set(_sepal_top "${CMAKE_CURRENT_LIST_DIR}/..")
set(_sepal_systemd "${_sepal_top}/deploy/systemd")
set(_sepal_confdir "${CMAKE_INSTALL_FULL_SYSCONFDIR}/sepal")

if(TARGET sepal)
  install(TARGETS sepal RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
elseif(SEPAL_PACKAGE_BINARY)
  install(PROGRAMS "${SEPAL_PACKAGE_BINARY}" DESTINATION ${CMAKE_INSTALL_BINDIR} RENAME sepal)
  # install(PROGRAMS) never strips; `--strip` (CPACK_STRIP_FILES) should, as for a target.
  install(CODE "
    if(CMAKE_INSTALL_DO_STRIP)
      execute_process(COMMAND \"${CMAKE_STRIP}\"
                        \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/sepal\"
                      COMMAND_ERROR_IS_FATAL ANY)
    endif()")
else()
  message(FATAL_ERROR "Packaging.cmake: no sepal target and no SEPAL_PACKAGE_BINARY")
endif()

# The unit: the hand-install notes at the top of deploy/systemd/sepal.service give way to a
# header for this install, and its paths become this prefix's.
file(READ "${_sepal_systemd}/sepal.service" _sepal_unit)
string(REGEX REPLACE "^(#[^\n]*\n)+" "" _sepal_unit "${_sepal_unit}")
string(REPLACE "/usr/local/bin/sepal" "${CMAKE_INSTALL_FULL_BINDIR}/sepal" _sepal_unit
               "${_sepal_unit}")
string(REPLACE "/etc/sepal/" "${_sepal_confdir}/" _sepal_unit "${_sepal_unit}")
string(REPLACE "file:///usr/share/doc/sepal/" "file://${CMAKE_INSTALL_FULL_DOCDIR}/" _sepal_unit
               "${_sepal_unit}")
file(CONFIGURE OUTPUT "${CMAKE_CURRENT_BINARY_DIR}/systemd/sepal.service" @ONLY CONTENT
"# Generated from sepal's deploy/systemd/sepal.service for ${CMAKE_INSTALL_FULL_BINDIR}/sepal.
# Edit ${_sepal_confdir}/sepal.yaml (check it: sepal --config ${_sepal_confdir}/sepal.yaml --check),
# then `systemctl enable --now sepal`. `systemctl reload sepal` checks the file, then applies
# it without dropping connections; `systemctl stop` drains. Local changes to the unit:
# `systemctl edit sepal` (a drop-in), not this file.
${_sepal_unit}")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_sepal_systemd}/sepal.service")

# systemd's search paths include <prefix>/lib/systemd/system and <prefix>/lib/sysusers.d
# for /usr and /usr/local (not the multiarch libdir).
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/systemd/sepal.service"
        DESTINATION lib/systemd/system)
install(FILES "${_sepal_systemd}/sepal.sysusers" DESTINATION lib/sysusers.d RENAME sepal.conf)

# The config, unless one is there already (an install over an existing one keeps it; the
# package's staging directory is always empty, and dpkg handles it as a conffile).
install(CODE "
  if(EXISTS \"\$ENV{DESTDIR}${_sepal_confdir}/sepal.yaml\")
    message(STATUS \"Keeping: \$ENV{DESTDIR}${_sepal_confdir}/sepal.yaml\")
  else()
    file(INSTALL DESTINATION \"${_sepal_confdir}\" TYPE FILE
         FILES \"${_sepal_systemd}/sepal.yaml\")
  endif()")

install(FILES "${_sepal_top}/README.md" "${_sepal_top}/cmake/package/copyright"
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
