# Installation (`cmake --install BUILD [--prefix P]`) and the Debian package
# built from the very same rules (`cpack -G DEB` in BUILD; deploy/README.md).
#
#   P/bin/qumail                        the binary
#   P/share/man/man8/qumail.8           the manual page
#   P/share/doc/qumail/                 README and the reference docs
#   P/share/qumail/{examples,setup.sh,mkcerts.sh}
#   QUMAIL_CONFDIR (/etc/qumail)        qumail.json + qumail.policy, only
#                                       when absent (never overwritten)
#   QUMAIL_SYSTEMDDIR, SYSUSERSDIR,     the unit, the qumail user, the
#   TMPFILESDIR (P/lib/systemd/...)     state folder
include(GNUInstallDirs)

set(QUMAIL_CONFDIR /etc/qumail CACHE PATH "configuration folder (absolute)")
set(QUMAIL_STATEDIR /var/lib/qumail CACHE PATH "state folder (absolute)")
set(QUMAIL_SYSTEMDDIR ${CMAKE_INSTALL_PREFIX}/lib/systemd/system CACHE PATH "systemd unit folder")
set(QUMAIL_SYSUSERSDIR ${CMAKE_INSTALL_PREFIX}/lib/sysusers.d CACHE PATH "sysusers.d folder")
set(QUMAIL_TMPFILESDIR ${CMAKE_INSTALL_PREFIX}/lib/tmpfiles.d CACHE PATH "tmpfiles.d folder")
set(QUMAIL_BINDIR ${CMAKE_INSTALL_FULL_BINDIR})
set(QUMAIL_DATADIR ${CMAKE_INSTALL_FULL_DATADIR}/qumail)
set(QUMAIL_DOCDIR ${CMAKE_INSTALL_FULL_DATADIR}/doc/qumail)
set(QUMAIL_VERSION ${PROJECT_VERSION})

set(gen ${PROJECT_BINARY_DIR}/install)
configure_file(${PROJECT_SOURCE_DIR}/deploy/systemd/qumail.service.in ${gen}/qumail.service @ONLY)
configure_file(${PROJECT_SOURCE_DIR}/deploy/man/qumail.8 ${gen}/qumail.8 @ONLY)
configure_file(${PROJECT_SOURCE_DIR}/deploy/setup.sh ${gen}/setup.sh @ONLY)

install(TARGETS qumail RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${gen}/qumail.8 DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES ${gen}/qumail.service DESTINATION ${QUMAIL_SYSTEMDDIR})
install(FILES deploy/systemd/qumail.sysusers DESTINATION ${QUMAIL_SYSUSERSDIR} RENAME qumail.conf)
install(FILES deploy/systemd/qumail.tmpfiles DESTINATION ${QUMAIL_TMPFILESDIR} RENAME qumail.conf)
install(PROGRAMS ${gen}/setup.sh certs/mkcerts.sh DESTINATION ${CMAKE_INSTALL_DATADIR}/qumail)

# Documentation: the README and each module's reference, by subject.
install(FILES README.md DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/qumail)
foreach(pair config/README.md:config.md policy/README.md:policy.md
             proxy/README.md:proxy.md mime/FORMAT-SPEC.md:FORMAT-SPEC.md
             mime/README.md:mime.md kme/README.md:kme.md kme/CLIENT.md:kme-client.md
             certs/README.md:certs.md deploy/README.md:deploy.md)
  string(REPLACE ":" ";" p ${pair})
  list(GET p 0 from)
  list(GET p 1 to)
  install(FILES ${from} DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/qumail RENAME ${to})
endforeach()
install(DIRECTORY deploy/gateway/ DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/qumail/gateway)
install(DIRECTORY docs/clients/ DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/qumail/clients)

file(GLOB examples config/examples/*.json config/examples/*.policy)
install(FILES ${examples} DESTINATION ${CMAKE_INSTALL_DATADIR}/qumail/examples)

# The configuration the service runs: installed when absent, never over an
# administrator's file (the Debian package marks them conffiles instead).
foreach(f qumail.json qumail.policy)
  install(CODE "
    if(EXISTS \"\$ENV{DESTDIR}${QUMAIL_CONFDIR}/${f}\")
      message(STATUS \"Keeping: \$ENV{DESTDIR}${QUMAIL_CONFDIR}/${f} (exists)\")
    else()
      # file(INSTALL) puts DESTDIR in front itself
      file(INSTALL \"${PROJECT_SOURCE_DIR}/config/examples/${f}\" DESTINATION \"${QUMAIL_CONFDIR}\"
           FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
    endif()")
endforeach()

# ---- the Debian package ---------------------------------------------------
# CPack's DEB generator rather than debhelper: it packages exactly what the
# rules above install (one list of files, no debian/ tree to keep in step),
# needs nothing beyond CMake and dpkg-dev, and dpkg-shlibdeps fills Depends.
# The maintainer scripts are deploy/debian/*.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME qumail)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "QuMail Gateway maintainers <qumail@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "quantum-key (QKD) mail protection proxy")
set(CPACK_PACKAGE_DESCRIPTION "qumail sits between mail clients and mail servers and protects outgoing
mail with keys from an ETSI GS QKD 014 key management entity (one-time pad
or AES-256-GCM), failing closed. It includes a KME simulator.")
set(CPACK_DEBIAN_PACKAGE_SECTION mail)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# openssl: setup.sh makes the local certificates; adduser: without
# systemd-sysusers.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "openssl, adduser")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "systemd")
# The package's paths are the configured ones: configure the packaging
# tree with -DCMAKE_INSTALL_PREFIX=/usr (deploy/build-deb.sh does).
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_SET_DESTDIR ON)
set(CPACK_STRIP_FILES ON)
set(debdir ${PROJECT_BINARY_DIR}/debian-scripts)
file(WRITE ${debdir}/conffiles "${QUMAIL_CONFDIR}/qumail.json\n${QUMAIL_CONFDIR}/qumail.policy\n")
foreach(s postinst prerm postrm)
  configure_file(${PROJECT_SOURCE_DIR}/deploy/debian/${s} ${debdir}/${s} @ONLY)
  file(CHMOD ${debdir}/${s} PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE
       GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
endforeach()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    "${debdir}/conffiles;${debdir}/postinst;${debdir}/prerm;${debdir}/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
