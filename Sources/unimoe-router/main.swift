import Foundation
import Stages

exit(RoleMain.main("router", CommandLine.arguments))
