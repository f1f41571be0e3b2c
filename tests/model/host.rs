//! The host side of an op: errors raised and logged on the simulated host, collected,
//! released, the most severe bank picked and translated, checked against plain rules (the
//! simulated host's registers, `collect`'s reading rules, docs/behaviour.md §4's
//! translation), then injected through the harness.

use super::harness::Harness;
use super::ops::HostBankError;
use super::reference::{FRAME_LIMIT, RefError};
use vmce::address::{HostPhysAddr, TranslateError};
use vmce::classify::Disposition;
use vmce::host::{HostBank, RaiseOutcome, SimulatedHost, collect, release};
use vmce::registers::{MciMisc, MciStatus};
use vmce::{GuestFrame, GuestMce, HostFrame, NotReflected};

impl Harness {
    /// A host machine check through the simulated host: raise and log, collect, release,
    /// pick the most severe bank, translate, inject.
    pub(super) fn host_event(
        &mut self,
        mcg_status: u64,
        errors: &[Option<HostBankError>; 4],
        consumer: Option<u32>,
    ) -> Result<(), String> {
        self.stats.host_events += 1;
        let mut host = SimulatedHost::new(self.host);
        // The model of the simulated host: banks below min(count, 32), STATUS/ADDR/MISC.
        let readable = (self.host.mcg_cap().bits() & 0xFF).min(32) as u8;
        let mut banks = [(0u64, 0u64, 0u64); 32];
        let mut model_mcg = 0u64;
        for (index, error) in errors.iter().flatten().enumerate() {
            let addr = self.host_addr(error.addr);
            let got = if index == 0 {
                host.raise(error.bank, error.status, mcg_status, addr, error.misc)
            } else {
                host.log(error.bank, error.status, addr, error.misc)
            };
            let uc = error.status & (1 << 61) != 0;
            let expected = if error.bank >= readable {
                RaiseOutcome::NoSuchBank
            } else {
                let slot = &mut banks[usize::from(error.bank)];
                let valid_uc = slot.0 & (1 << 63) != 0 && slot.0 & (1 << 61) != 0;
                if index == 0 && !uc && valid_uc {
                    RaiseOutcome::Ignored
                } else {
                    if index == 0 && uc {
                        model_mcg = mcg_status;
                    }
                    let over = if slot.0 & (1 << 63) != 0 { 1 << 62 } else { 0 };
                    *slot = (error.status | over, addr, error.misc);
                    RaiseOutcome::Logged
                }
            };
            ensure!(
                got == expected,
                "host raise/log {error:x?}: vmce {got:?}, model {expected:?}"
            );
        }
        let event = collect(&mut host, &self.host);
        let mut expected_len = 0;
        for (bank, &(status, addr, misc)) in banks.iter().enumerate().take(usize::from(readable)) {
            if status & (1 << 63) == 0 {
                continue;
            }
            let expected = HostBank {
                bank: bank as u8,
                status: MciStatus::from_bits_retain(status),
                addr: if status & (1 << 58) != 0 { addr } else { 0 },
                misc: MciMisc(if status & (1 << 59) != 0 { misc } else { 0 }),
            };
            ensure!(
                event.banks().get(expected_len) == Some(&expected),
                "collected bank {expected_len}: vmce {:x?}, model {expected:x?}",
                event.banks().get(expected_len)
            );
            expected_len += 1;
        }
        ensure!(
            event.banks().len() == expected_len && event.mcg_status.bits() == model_mcg,
            "collected {} banks, MCG_STATUS {:#x}; model {expected_len}, {model_mcg:#x}",
            event.banks().len(),
            event.mcg_status.bits()
        );
        release(&mut host, &event);
        for bank in event.banks() {
            ensure!(
                host.peek(0x401 + 4 * u32::from(bank.bank)) == Some(0),
                "bank {} not released",
                bank.bank
            );
        }
        ensure!(
            host.peek(0x17A) == Some(0) && host.invalid_accesses() == 0,
            "host MCG_STATUS {:?} after release, {} invalid accesses",
            host.peek(0x17A),
            host.invalid_accesses()
        );
        let Some((bank, disposition)) = event.most_severe(&self.host) else {
            ensure!(expected_len == 0, "no most severe bank of {expected_len}");
            return Ok(());
        };
        ensure!(
            event.banks().contains(&bank),
            "most severe bank {bank:?} was not collected"
        );
        let result = GuestMce::from_host(&self.host, event.mcg_status, &bank, &self.memory_map());
        let class = match disposition {
            Disposition::Reflect(class) => class,
            Disposition::HostOnly(reason) => {
                ensure!(
                    result == Err(NotReflected::HostOnly(reason)),
                    "most_severe says host-only {reason:?}, from_host {result:?}"
                );
                return Ok(());
            }
            Disposition::Fatal(reason) => {
                ensure!(
                    result == Err(NotReflected::Fatal(reason)),
                    "most_severe says fatal {reason:?}, from_host {result:?}"
                );
                return Ok(());
            }
        };
        // docs/behaviour.md §4: the frame rewritten through the owner's map, the offset
        // kept, STATUS, MISC and MCG_STATUS as the host had them.
        let host_frame = bank.addr >> 12;
        let expected = match self.memory_map().lookup(host_frame) {
            None => Err(NotReflected::Translate(TranslateError::NotOwned(
                HostFrame(host_frame),
            ))),
            Some(frame) if frame >= FRAME_LIMIT => Err(NotReflected::Translate(
                TranslateError::OutOfRange(GuestFrame(frame)),
            )),
            Some(frame) => Ok(RefError {
                class,
                mcg_status: event.mcg_status.bits(),
                status: bank.status.bits(),
                guest_addr: (frame << 12) | (bank.addr & 0xFFF),
                misc: bank.misc.0,
            }),
        };
        match (result, expected) {
            (Ok(mce), Ok(error)) => {
                let as_model = RefError {
                    class: mce.class,
                    mcg_status: mce.host_mcg_status.bits(),
                    status: mce.host_status.bits(),
                    guest_addr: mce.guest_addr.0,
                    misc: mce.misc.0,
                };
                ensure!(
                    as_model == error && mce.host_addr == HostPhysAddr(bank.addr),
                    "from_host:\n vmce  {mce:x?}\n model {error:x?}"
                );
                self.stats.host_reflected += 1;
                self.inject(error, mce.host_addr, consumer)
            }
            (Err(got), Err(expected)) => {
                ensure!(
                    got == expected,
                    "from_host: vmce {got:?}, model {expected:?}"
                );
                match got {
                    NotReflected::Translate(TranslateError::NotOwned(_)) => {
                        self.stats.not_owned += 1
                    }
                    _ => self.stats.frame_out_of_range += 1,
                }
                Ok(())
            }
            (got, expected) => Err(format!(
                "from_host of {bank:x?}: vmce {got:x?}, model {expected:x?}"
            )),
        }
    }
}
